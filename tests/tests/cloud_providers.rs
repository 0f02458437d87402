//! Azure OpenAI, the Gemini API and Vertex AI through the whole path (edge,
//! origin, provider), driven by the official openai and anthropic SDKs
//! (tests/sdk/clouds.py) against test upstreams written from each API's
//! reference (origin/tests/upstream/clouds.rs), which refuse what the real
//! services refuse. Checked here: what each upstream received (Azure's
//! `api-version` and key header, an Entra ID token and a Vertex token each
//! asked for once and reused, Gemini's function responses in call order and
//! thought signatures sent back), the catalog's price on a Gemini call, and
//! a Gemini stream that fails mid-way: a clear error event for the client,
//! then the next call served by the fallback.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

#[path = "../../origin/tests/upstream/mod.rs"]
mod upstream;

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack};
use upstream::Upstream;
use upstream::clouds::{ENTRA_CLIENT, ENTRA_SECRET, ENTRA_TENANT, GEMINI_BREAKS};

async fn run_sdks(stack: &Stack, args: &[&str]) {
    let out = tokio::process::Command::new("python3")
        .arg(sluice_e2e::repo().join("tests/sdk/clouds.py"))
        .args(args)
        .env("SLUICE_EDGE", &stack.edge)
        .env("SLUICE_API_KEY", DEMO_KEY)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "SDKs on {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(up: &Upstream) -> String {
    format!(
        r#"
[routing]
attempts = 1
backoff_base_ms = 1
breaker_failures = 1
breaker_open_ms = 60000

[[models]]
name = "azure-gpt"
[[models.deployments]]
provider = "azure"
base_url = "{root}"
api_version = "2024-10-21"
model = "prod-4o"
catalog_model = "gpt-4o"
keys = ["azure-key-1"]

[[models]]
name = "azure-v1"
[[models.deployments]]
provider = "azure"
base_url = "{root}"
model = "gpt-4o-mini"
entra = {{ tenant_id = "{ENTRA_TENANT}", client_id = "{ENTRA_CLIENT}", client_secret_env = "TEST_ENTRA_CLIENT_SECRET", authority = "{root}" }}

[[models]]
name = "azure-v1-other"
[[models.deployments]]
provider = "azure"
base_url = "{root}"
model = "gpt-4.1"
entra = {{ tenant_id = "{ENTRA_TENANT}", client_id = "{ENTRA_CLIENT}", client_secret_env = "TEST_ENTRA_CLIENT_SECRET", authority = "{root}" }}

[[models]]
name = "azure-embed"
[[models.deployments]]
provider = "azure"
base_url = "{root}"
api_version = "2025-04-01-preview"
model = "embed-small"
keys = ["azure-key-1"]

[[models]]
name = "gemini"
[[models.deployments]]
provider = "gemini"
base_url = "{root}"
model = "gemini-2.5-flash"
keys = ["gemini-key-1"]

[[models]]
name = "gemini3"
[[models.deployments]]
provider = "gemini"
base_url = "{root}"
model = "gemini-3-pro-preview"
keys = ["gemini-key-1"]

[[models]]
name = "gemini-embed"
[[models.deployments]]
provider = "gemini"
base_url = "{root}"
model = "gemini-embedding-001"
keys = ["gemini-key-1"]

[[models]]
name = "vertex"
[[models.deployments]]
provider = "vertex"
base_url = "{root}"
project = "test-project"
region = "europe-west4"
model = "gemini-2.5-flash"
credentials_file = "{service_account}"

[[models]]
name = "vertex-embed"
[[models.deployments]]
provider = "vertex"
base_url = "{root}"
project = "test-project"
region = "europe-west4"
model = "text-embedding-005"
credentials_file = "{service_account}"

[[models]]
name = "vertex-claude"
[[models.deployments]]
provider = "vertex"
base_url = "{root}"
project = "test-project"
region = "us-east5"
model = "claude-sonnet-4-5@20250929"
credentials_file = "{service_account}"

[[models]]
name = "flaky"
[[models.deployments]]
name = "gemini-first"
provider = "gemini"
base_url = "{root}"
model = "{GEMINI_BREAKS}"
keys = ["gemini-key-1"]
[[models.deployments]]
name = "azure-after"
provider = "azure"
base_url = "{root}"
api_version = "2024-10-21"
model = "prod-4o"
keys = ["azure-key-1"]
"#,
        root = up.root(),
        service_account = up.service_account_file().display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sdks_work_on_azure_gemini_and_vertex_through_the_edge() {
    let up = Upstream::start().await;
    let path = std::env::temp_dir().join(format!("sluice-clouds-{}.toml", up.addr.port()));
    std::fs::write(&path, config(&up)).unwrap();
    let stack = Stack::start(Options {
        origin_env: vec![
            ("SLUICE_CONFIG", path.display().to_string()),
            ("TEST_ENTRA_CLIENT_SECRET", ENTRA_SECRET.to_string()),
        ],
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "unlimited".into()),
        ],
        ..Options::default()
    })
    .await;

    for args in [
        &["azure-gpt", "azure-embed"][..],
        &["azure-v1"],
        &["gemini", "gemini-embed"],
        &["gemini3"],
        &["vertex", "vertex-embed"],
        &["vertex-claude"],
    ] {
        run_sdks(&stack, args).await;
    }

    // A second deployment of the same Entra ID application uses its token.
    let other = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.edge))
        .bearer_auth(DEMO_KEY)
        .json(&json!({ "model": "azure-v1-other", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let seen = up.seen();
    // Azure: the deployment-based endpoint with api-key, the v1 endpoint
    // with an Entra ID token that was asked for once.
    let deployment_calls: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/azure/deployments/chat/completions")
        .collect();
    assert!(deployment_calls.len() >= 8, "{}", deployment_calls.len());
    assert!(
        deployment_calls
            .iter()
            .all(|s| s.model == "prod-4o" && s.key.as_deref() == Some("azure-key-1"))
    );
    let v1_calls: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/azure/v1/chat/completions")
        .collect();
    assert!(v1_calls.len() >= 8, "{}", v1_calls.len());
    assert!(
        v1_calls.iter().all(|s| s.key.as_deref() == Some("entra-1")),
        "one Entra token, reused"
    );
    // Claude on Vertex: Messages and chat alike reached rawPredict /
    // streamRawPredict of the anthropic publisher with Vertex's token.
    let claude: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/v1/messages" && s.model == "claude-sonnet-4-5@20250929")
        .collect();
    assert!(claude.len() >= 10, "{}", claude.len());
    assert!(claude.iter().any(|s| s.stream));
    // Vertex's token too (one for the three deployments on that service
    // account): two tokens in all, for some hundred calls.
    assert_eq!(up.tokens_issued(), 2);

    // Gemini: the tool loop's second turn answers both calls in their order,
    // and Gemini 3 got its thought signature back.
    let gemini: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/google/generateContent" && s.model == "gemini-3-pro-preview")
        .collect();
    let answered = gemini
        .iter()
        .find(|s| s.body.to_string().contains("functionResponse"))
        .expect("a function response reached Gemini");
    let contents = answered.body["contents"].as_array().unwrap();
    let model_turn = contents.iter().find(|c| c["role"] == "model").unwrap();
    assert_eq!(
        model_turn["parts"][0]["thoughtSignature"],
        "sig-gemini-3-pro-preview"
    );
    let responses = &contents.last().unwrap()["parts"];
    assert_eq!(responses[0]["functionResponse"]["name"], "lookup");
    assert!(
        responses[0]["functionResponse"]["response"]
            .to_string()
            .contains("\\\"a\\\""),
        "{responses}"
    );
    assert_eq!(
        answered.body["systemInstruction"]["parts"][0]["text"],
        "Use the tool."
    );

    // The catalog prices a Gemini call (12 prompt tokens, 2 of them cached;
    // 6 answer and 4 thinking tokens at gemini-2.5-flash's prices).
    let client = reqwest::Client::new();
    let chat = |model: &str, stream: bool| {
        client
            .post(format!("{}/v1/chat/completions", stack.edge))
            .bearer_auth(DEMO_KEY)
            .json(&json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let priced = chat("gemini", false).await.unwrap();
    assert_eq!(priced.status(), 200);
    assert_eq!(priced.headers()["x-sluice-provider"], "gemini");
    assert_eq!(priced.headers()["x-sluice-cost-usd"], "0.000028");

    // A Gemini stream that fails after its first event: the client sees the
    // text so far and then an error event; the breaker opens, and the next
    // call is served by the Azure fallback.
    let broken = chat("flaky", true).await.unwrap();
    assert_eq!(broken.status(), 200);
    let text = broken.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert!(
        text.contains("overloaded"),
        "the upstream's reason reaches the client: {text}"
    );
    let next = chat("flaky", false).await.unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(next.headers()["x-sluice-deployment"], "azure-after");
    let body: Value = next.json().await.unwrap();
    assert!(
        body["prompt_filter_results"].is_array(),
        "Azure's own fields pass through: {body}"
    );

    // Azure's content filter is a 400 that names it, tried once.
    let before = up.seen().len();
    let filtered = client
        .post(format!("{}/v1/chat/completions", stack.edge))
        .bearer_auth(DEMO_KEY)
        .json(&json!({ "model": "azure-gpt", "messages": [{ "role": "user", "content": "FILTER_ME" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.status(), 400);
    let error: Value = filtered.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content_filter"),
        "{error}"
    );
    assert_eq!(
        up.seen().len(),
        before + 1,
        "a filtered prompt is not retried"
    );
}
