//! AWS Bedrock through the whole path (edge, origin, provider), driven by
//! the official openai and anthropic SDKs (tests/sdk/clouds.py) against a
//! test Bedrock written from AWS's API reference (tests/sdk/bedrock_upstream.py),
//! which verifies every SigV4 signature with botocore's own signer and
//! every Converse body against botocore's service model. boto3 and the
//! anthropic SDK's AnthropicBedrock client first check that upstream
//! against AWS's wire format (tests/sdk/bedrock_fidelity.py).
//!
//! Checked here: the three ways to sign (an access key, a role assumed with
//! a web-identity token once for every call, a Bedrock API key), an
//! inference profile's ARN in the path, Claude's Messages calls reaching
//! `InvokeModel` with Anthropic's body while chat reaches Converse with
//! `cache_control` as cache points, the catalog's price, a stream that
//! fails mid-way (a clear error, then the fallback), and an Azure
//! deployment falling back to Bedrock mid tool loop with the whole context.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

#[path = "../../origin/tests/upstream/mod.rs"]
mod upstream;

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack, TestBedrock};
use upstream::{Behaviour, Upstream};

const AWS_SECRET: &str = "sluice-test-secret/with+chars";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sluice-bedrock";
const WEB_IDENTITY_TOKEN: &str = "eyJ.test-web-identity.token";
const CLAUDE: &str = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
const PROFILE_ARN: &str = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-haiku-4-5-20251001-v1:0";

async fn python(script: &str, args: &[&str], stack: Option<&Stack>) {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(sluice_e2e::repo().join("tests/sdk").join(script))
        .args(args);
    if let Some(stack) = stack {
        command
            .env("SLUICE_EDGE", &stack.edge)
            .env("SLUICE_API_KEY", DEMO_KEY);
    }
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(bedrock: &str, azure: &Upstream, token_file: &std::path::Path) -> String {
    let access_key =
        r#"aws = { access_key_id = "AKIDSLUICETEST", secret_access_key_env = "TEST_AWS_SECRET" }"#;
    let web_identity = format!(
        r#"aws = {{ role_arn = "{ROLE_ARN}", web_identity_token_file = "{}", sts_endpoint = "{bedrock}/sts" }}"#,
        token_file.display()
    );
    format!(
        r#"
[routing]
attempts = 1
backoff_base_ms = 1
breaker_failures = 1
breaker_open_ms = 60000

[[models]]
name = "bedrock-claude"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "{CLAUDE}"
{access_key}

[[models]]
name = "bedrock-profile"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "{PROFILE_ARN}"
{access_key}

[[models]]
name = "bedrock-nova"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "amazon.nova-pro-v1:0"
{web_identity}

[[models]]
name = "bedrock-llama"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "meta.llama3-3-70b-instruct-v1:0"
keys = ["bedrock-api-key-1"]

[[models]]
name = "bedrock-embed"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "amazon.titan-embed-text-v2:0"
{web_identity}

[[models]]
name = "bedrock-opus"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "global.anthropic.claude-opus-4-7"
{access_key}

[[models]]
name = "bedrock-throttled"
[[models.deployments]]
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "amazon.nova-throttled-v1:0"
{access_key}

[[models]]
name = "flaky"
[[models.deployments]]
name = "bedrock-first"
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "amazon.nova-breaks-v1:0"
{web_identity}
[[models.deployments]]
name = "bedrock-after"
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "amazon.nova-lite-v1:0"
{web_identity}

[[models]]
name = "azure-then-bedrock"
[[models.deployments]]
name = "azure-first"
provider = "azure"
base_url = "{azure}"
api_version = "2024-10-21"
model = "prod-4o"
keys = ["azure-key-1"]
[[models.deployments]]
name = "bedrock-second"
provider = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
model = "{CLAUDE}"
{access_key}
"#,
        azure = azure.root(),
    )
}

fn calls<'a>(seen: &'a Value, model: &str, action: &str) -> Vec<&'a Value> {
    seen["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["model"] == model && c["action"] == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sdks_work_on_bedrock_through_the_edge() {
    let bedrock = TestBedrock::start(None);
    // AWS's own clients accept the test Bedrock before Sluice is tried on it.
    python("bedrock_fidelity.py", &[&bedrock.base], None).await;

    let azure = Upstream::start().await;
    let port = azure.addr.port();
    let token_file = std::env::temp_dir().join(format!("sluice-bedrock-token-{port}"));
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    let path = std::env::temp_dir().join(format!("sluice-bedrock-{port}.toml"));
    std::fs::write(&path, config(&bedrock.base, &azure, &token_file)).unwrap();
    let stack = Stack::start(Options {
        origin_env: vec![
            ("SLUICE_CONFIG", path.display().to_string()),
            ("TEST_AWS_SECRET", AWS_SECRET.to_string()),
        ],
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
        ],
        ..Options::default()
    })
    .await;

    for args in [
        &["bedrock-claude", "bedrock-embed"][..],
        &["bedrock-nova"],
        &["bedrock-llama"],
    ] {
        python("clouds.py", args, Some(&stack)).await;
    }

    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", stack.edge))
            .bearer_auth(DEMO_KEY)
            .json(&body)
            .send()
    };

    // Chat on Claude goes to Converse; cache_control becomes a cache point
    // after its block, and the catalog prices the call (12 prompt and 6
    // answer tokens at the us. profile's prices).
    let cached = post(
        "/v1/chat/completions",
        json!({ "model": "bedrock-claude", "messages": [
            { "role": "system", "content": [{ "type": "text", "text": "A long prefix.", "cache_control": { "type": "ephemeral" } }] },
            { "role": "user", "content": "hi" }] }),
    )
    .await
    .unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.headers()["x-sluice-provider"], "bedrock");
    assert_eq!(cached.headers()["x-sluice-cost-usd"], "0.000046");
    let answer: Value = cached.json().await.unwrap();
    assert_eq!(
        answer["bedrock"]["metrics"]["latencyMs"], 42,
        "Bedrock's own fields pass through: {answer}"
    );

    // An inference profile's ARN, escaped in the path and signed as AWS
    // signs it (the test Bedrock would refuse the signature otherwise).
    let profile = post(
        "/v1/messages",
        json!({ "model": "bedrock-profile", "max_tokens": 50, "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await
    .unwrap();
    assert_eq!(profile.status(), 200, "{}", profile.text().await.unwrap());
    // Beta flags: one Bedrock never takes is dropped and said; a model that
    // refuses the rest gets the call again without them, and that is said.
    let beta = |model: &str| {
        client
            .post(format!("{}/v1/messages", stack.edge))
            .header("x-api-key", DEMO_KEY)
            .header("anthropic-beta", "oauth-2025-04-20,context-1m-2025-08-07")
            .json(&json!({ "model": model, "max_tokens": 50, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let kept = beta("bedrock-claude").await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(
        kept.headers()["x-sluice-adjusted"],
        "anthropic_beta:oauth-2025-04-20 dropped (Bedrock does not take it)"
    );
    let refused = beta("bedrock-opus").await.unwrap();
    assert_eq!(refused.status(), 200);
    assert!(
        refused.headers()["x-sluice-adjusted"]
            .to_str()
            .unwrap()
            .contains("anthropic_beta:dropped (the model refused them)")
    );

    // Bedrock's CountTokens answers count_tokens.
    let counted = post(
        "/v1/messages/count_tokens",
        json!({ "model": "bedrock-claude", "messages": [{ "role": "user", "content": "how many tokens is this?" }] }),
    )
    .await
    .unwrap();
    assert_eq!(counted.status(), 200);
    let counted: Value = counted.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0, "{counted}");

    let seen = bedrock.seen().await;
    // Claude's Messages calls went to InvokeModel with Anthropic's body,
    // its chat calls to Converse.
    let invoked = calls(&seen, CLAUDE, "invoke");
    assert!(invoked.len() >= 4, "{}", invoked.len());
    assert!(
        invoked
            .iter()
            .all(|c| c["body"]["anthropic_version"] == "bedrock-2023-05-31"
                && c["body"].get("model").is_none())
    );
    assert!(!calls(&seen, CLAUDE, "invoke-with-response-stream").is_empty());
    let conversed = calls(&seen, CLAUDE, "converse");
    let with_cache = conversed.last().unwrap();
    assert_eq!(
        with_cache["body"]["system"],
        json!([{ "text": "A long prefix." }, { "cachePoint": { "type": "default" } }])
    );
    assert!(!calls(&seen, "amazon.nova-pro-v1:0", "converse-stream").is_empty());
    assert_eq!(calls(&seen, PROFILE_ARN, "invoke").len(), 1);
    // How each deployment signed: the access key, the assumed role's
    // temporary credentials (one STS call for every call of three
    // deployments), a Bedrock API key.
    assert!(
        conversed
            .iter()
            .all(|c| c["auth"]["access_key"] == "AKIDSLUICETEST")
    );
    let nova = calls(&seen, "amazon.nova-pro-v1:0", "converse");
    assert!(nova.len() >= 5, "{}", nova.len());
    assert!(
        nova.iter()
            .all(|c| c["auth"]["session"] == true && c["auth"]["access_key"] == "ASIATEMP00000001")
    );
    assert_eq!(seen["sts"], json!(["sluice"]), "one role assumption");
    assert!(
        calls(&seen, "meta.llama3-3-70b-instruct-v1:0", "converse")
            .iter()
            .all(|c| c["auth"]["kind"] == "api-key")
    );

    // A chat tool loop with reasoning on Claude: Converse's signed reasoning
    // comes back as thinking blocks, and the SDK-style echo of the assistant
    // message puts it first in the tool-use turn, as Claude requires (the
    // test Bedrock refuses the turn otherwise).
    let tools = json!([{ "type": "function", "function": { "name": "lookup",
        "parameters": { "type": "object", "properties": { "q": { "type": "string" } } } } }]);
    let mut thinking_loop = vec![json!({ "role": "user", "content": "look up a and b" })];
    let asked: Value = post(
        "/v1/chat/completions",
        json!({ "model": "bedrock-claude", "reasoning_effort": "low", "messages": thinking_loop, "tools": tools }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let message = asked["choices"][0]["message"].clone();
    assert_eq!(message["reasoning_content"], "Let me think.", "{asked}");
    assert_eq!(message["thinking_blocks"][0]["signature"], "sig-bedrock");
    for call in message["tool_calls"].as_array().unwrap() {
        thinking_loop
            .push(json!({ "role": "tool", "tool_call_id": call["id"], "content": "found" }));
    }
    thinking_loop.insert(1, message);
    let answered = post(
        "/v1/chat/completions",
        json!({ "model": "bedrock-claude", "reasoning_effort": "low", "messages": thinking_loop, "tools": tools }),
    )
    .await
    .unwrap();
    assert_eq!(answered.status(), 200, "{}", answered.text().await.unwrap());
    let seen = bedrock.seen().await;
    let second = &calls(&seen, CLAUDE, "converse").last().unwrap()["body"];
    assert_eq!(
        second["additionalModelRequestFields"]["thinking"]["type"],
        "enabled"
    );
    assert_eq!(
        second["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["signature"],
        "sig-bedrock"
    );

    // Conversations and jobs reach Bedrock through the same service.
    let conversation: Value = post("/v1/conversations", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = conversation["id"].as_str().unwrap();
    for turn in ["hello", "and again"] {
        let reply = post(
            &format!("/v1/conversations/{id}/messages"),
            json!({ "content": turn, "model": "bedrock-nova" }),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 201);
        let reply: Value = reply.json().await.unwrap();
        assert!(
            reply["message"]["content"]
                .as_str()
                .unwrap()
                .contains("amazon.nova-pro-v1:0"),
            "{reply}"
        );
    }
    let job: Value = post(
        "/v1/jobs",
        json!({ "model": "bedrock-llama", "messages": [{ "role": "user", "content": "later" }] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let done = sluice_e2e::wait_for_job(
        &stack.edge,
        DEMO_KEY,
        job["job_id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let seen = bedrock.seen().await;
    let second_turn = calls(&seen, "amazon.nova-pro-v1:0", "converse")
        .into_iter()
        .rev()
        .find(|c| c["body"].to_string().contains("and again"))
        .unwrap();
    assert_eq!(
        second_turn["body"]["messages"].as_array().unwrap().len(),
        3,
        "the conversation's context: {}",
        second_turn["body"]
    );

    // Bedrock's ThrottlingException rests the deployment: the client gets
    // the gateway's 429 with a Retry-After, as for any provider's 429.
    let throttled = post(
        "/v1/chat/completions",
        json!({ "model": "bedrock-throttled", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await
    .unwrap();
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));

    // A stream that fails after its first text: the client sees the
    // exception's reason in an error event; the breaker opens and the next
    // call is served by the fallback.
    let broken = post(
        "/v1/chat/completions",
        json!({ "model": "flaky", "stream": true, "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await
    .unwrap();
    assert_eq!(broken.status(), 200);
    let text = broken.text().await.unwrap();
    assert!(
        text.contains("\"error\"") && text.contains("modelStreamErrorException"),
        "{text}"
    );
    let next = post(
        "/v1/chat/completions",
        json!({ "model": "flaky", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await
    .unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(next.headers()["x-sluice-deployment"], "bedrock-after");

    // Azure answers a tool loop's first turn, then fails; Bedrock takes the
    // second with the whole context: system, question, Azure's calls
    // (their ids kept) and their results.
    let tools = json!([{ "type": "function", "function": { "name": "lookup",
        "parameters": { "type": "object", "properties": { "q": { "type": "string" } } } } }]);
    let mut messages = vec![
        json!({ "role": "system", "content": "Use the tool." }),
        json!({ "role": "user", "content": "look up a and b" }),
    ];
    let first = post(
        "/v1/chat/completions",
        json!({ "model": "azure-then-bedrock", "messages": messages, "tools": tools }),
    )
    .await
    .unwrap();
    assert_eq!(first.headers()["x-sluice-deployment"], "azure-first");
    let first: Value = first.json().await.unwrap();
    let assistant = first["choices"][0]["message"].clone();
    let ids: Vec<String> = assistant["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.is_empty(), "{first}");
    messages.push(assistant);
    for id in &ids {
        messages
            .push(json!({ "role": "tool", "tool_call_id": id, "content": format!("found {id}") }));
    }
    azure.for_model("prod-4o", Behaviour::Status(500, None));
    let second = post(
        "/v1/chat/completions",
        json!({ "model": "azure-then-bedrock", "messages": messages, "tools": tools }),
    )
    .await
    .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-sluice-deployment"], "bedrock-second");
    let second: Value = second.json().await.unwrap();
    assert!(
        second["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains(&format!("found {}", ids[0])),
        "{second}"
    );
    let seen = bedrock.seen().await;
    let took_over = calls(&seen, CLAUDE, "converse").last().unwrap()["body"].clone();
    assert_eq!(took_over["system"], json!([{ "text": "Use the tool." }]));
    let turns = took_over["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{took_over}");
    let used: Vec<&str> = turns[1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b.pointer("/toolUse/toolUseId").and_then(Value::as_str))
        .collect();
    assert_eq!(used, ids, "Azure's call ids");
    assert_eq!(
        turns[2]["content"].as_array().unwrap().len(),
        ids.len(),
        "every result"
    );
}
