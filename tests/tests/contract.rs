//! Sluice held to the published contracts through the edge
//! (tests/contract/contract.py): the answers of `/v1/chat/completions`,
//! `/v1/responses`, `/v1/embeddings` and `/v1/models`, streamed events
//! included, validate against OpenAI's OpenAPI description
//! (`../shared/specs/openai-openapi.yaml`), and requests generated from its
//! request schemas, valid and not, get no 5xx and no 2xx when invalid; the
//! same for `/v1/messages` from Anthropic's reference.
use sluice_e2e::{Options, Stack};

#[tokio::test(flavor = "multi_thread")]
async fn answers_and_generated_requests_keep_the_published_contracts() {
    let key = "sk-sluice-contract";
    let stack = Stack::start(Options {
        api_keys: vec![(key.into(), "contract".into(), "admin")],
        // Hundreds of requests from one address.
        edge_variables: vec![("rate_limit_ip", "unlimited".into())],
        ..Options::default()
    })
    .await;
    let out = tokio::process::Command::new("python3")
        .arg(sluice_e2e::repo().join("tests/contract/contract.py"))
        .env("SLUICE_EDGE", &stack.edge)
        .env("SLUICE_API_KEY", key)
        .output()
        .await
        .expect("python3 runs tests/contract/contract.py");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success(),
        "contract violations:\n{stdout}\n{stderr}"
    );
}
