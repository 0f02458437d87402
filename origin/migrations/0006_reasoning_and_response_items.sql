-- Reasoning kept at the gateway for clients that do not send it back
-- (`crate::reasoning`): the thinking blocks (with Anthropic's signatures) of an
-- answer that called tools, by the caller and the answer's first tool call id,
-- until `expires_at_ms`; the sweeper deletes expired rows.
CREATE TABLE reasoning_state (
    subject TEXT NOT NULL,
    call_id TEXT NOT NULL,
    blocks TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (subject, call_id)
);

CREATE INDEX reasoning_state_by_expiry ON reasoning_state (expires_at_ms);

-- Every item of a stored response (its input and output items), by the
-- caller and the item's id, so an `item_reference` (or a reasoning item sent
-- back without its `encrypted_content`) resolves to the item Sluice issued.
-- Deleted with the response that stored it first.
CREATE TABLE response_items (
    subject TEXT NOT NULL,
    id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (subject, id)
);

CREATE INDEX response_items_by_response ON response_items (response_id);
