//! The official `openai` and `anthropic` SDKs through the edge against the
//! test upstreams of both wire formats (tests/sdk/upstreams.py), checking
//! what the upstreams received: tools, tool results, the image part and
//! `cache_control` unchanged, and a Responses conversation continued on the
//! Anthropic fallback after its OpenAI-compatible primary broke.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: any failure should fail the test"
)]

#[path = "../../origin/tests/upstream/mod.rs"]
mod upstream;

use serde_json::{Value, json};
use sluice_e2e::{DEMO_KEY, Options, Stack};
use upstream::{Behaviour, Upstream};

async fn run_script(stack: &Stack, args: &[&str]) -> String {
    let out = tokio::process::Command::new("python3")
        .arg(sluice_e2e::repo().join("tests/sdk/upstreams.py"))
        .args(args)
        .env("SLUICE_EDGE", &stack.edge)
        .env("SLUICE_API_KEY", DEMO_KEY)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "SDK script {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn sdks_reach_both_upstream_formats_and_responses_survive_a_fallback() {
    let up = Upstream::start().await;
    let config = std::env::temp_dir().join(format!("sluice-sdk-upstreams-{}.toml", up.addr.port()));
    std::fs::write(
        &config,
        format!(
            r#"
[routing]
attempts = 1
backoff_base_ms = 1

[[models]]
name = "gpt"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "upstream-gpt"

[[models]]
name = "claude"
[[models.deployments]]
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-upstream"
keys = ["ak-1"]

[[models]]
name = "agent"
[[models.deployments]]
name = "primary"
provider = "openai"
base_url = "{openai}"
model = "broken-primary"
[[models.deployments]]
name = "secondary"
provider = "anthropic"
base_url = "{anthropic}"
model = "healthy-secondary"
keys = ["ak-2"]
"#,
            openai = up.openai_base(),
            anthropic = up.anthropic_base(),
        ),
    )
    .unwrap();
    let stack = Stack::start(Options {
        origin_env: vec![("SLUICE_CONFIG", config.display().to_string())],
        ..Options::default()
    })
    .await;
    let first = run_script(&stack, &["first"]).await;
    let first_id = first.trim().lines().last().unwrap().to_string();

    let seen = up.seen();
    let chat = seen.iter().find(|s| s.model == "upstream-gpt").unwrap();
    assert_eq!(chat.body["tools"][0]["function"]["name"], "lookup");
    let messages = seen.iter().find(|s| s.model == "claude-upstream").unwrap();
    assert_eq!(
        messages.body["messages"][0]["content"],
        json!([
            { "type": "text", "text": "what is this?", "cache_control": { "type": "ephemeral" } },
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
        ]),
        "the Messages body reaches an Anthropic upstream as the client sent it"
    );
    assert!(messages.stream);

    up.for_model("broken-primary", Behaviour::Status(500, None));
    let second = run_script(&stack, &["second", &first_id]).await;
    assert!(second.contains("continued"), "{second}");
    let seen = up.seen();
    let fallback = seen
        .iter()
        .rev()
        .find(|s| s.model == "healthy-secondary")
        .expect("the fallback served the second turn");
    let turns: &Vec<Value> = fallback.body["messages"].as_array().unwrap();
    assert_eq!(turns[0]["content"][0]["text"], "look up a and b");
    let uses: Vec<&Value> = turns[1]["content"].as_array().unwrap().iter().collect();
    assert_eq!(uses[0]["type"], "tool_use");
    assert_eq!(uses[0]["id"], "call_a");
    assert_eq!(uses[1]["input"], json!({ "q": "b" }));
    let results = turns[2]["content"].as_array().unwrap();
    assert_eq!(results[0]["tool_use_id"], "call_a");
    assert_eq!(results[1]["content"], "B is for bee");
}
