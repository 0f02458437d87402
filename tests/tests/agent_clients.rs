//! The agent clients people run, installed from their registries by the test
//! command, driven through the edge in multi-turn tool loops the way apps
//! drive them: Claude Code (`claude -p`, a tool it runs itself), the OpenAI
//! Agents SDK (Responses and chat models), the Vercel AI SDK (`@ai-sdk/openai`
//! default and `.chat`, `@ai-sdk/anthropic`) and LangChain's `ChatOpenAI`
//! (chat and `use_responses_api`). Each runs against an OpenAI-format and an
//! Anthropic-format test upstream that refuse what those APIs document they
//! refuse (origin/tests/upstream/rules.rs: thinking blocks before a tool loop's
//! `tool_use`, no thinking with a forced tool choice, `max_completion_tokens`
//! for reasoning models, tool results answering tool calls, signed thinking),
//! and whose scripted model calls the tool a `CALL` line names
//! (origin/tests/upstream/agent.rs). The clients' scripts are in tests/clients.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: any failure should fail the test"
)]

#[path = "../../origin/tests/upstream/mod.rs"]
mod upstream;

use serde_json::{Value, json};
use sluice_e2e::{Options, Stack};
use std::path::PathBuf;
use upstream::{Behaviour, Upstream};

/// An admin-tier key: the loops make more calls than a free tier allows a minute.
const KEY: &str = "sk-sluice-agent-clients";

fn clients() -> PathBuf {
    sluice_e2e::repo().join("tests/clients")
}

/// Every alias the clients use: OpenAI-compatible (a chat model and a
/// reasoning model), Anthropic, and two fallbacks across the formats.
fn config(up: &Upstream) -> String {
    format!(
        r#"
[routing]
attempts = 1
backoff_base_ms = 1

[[models]]
name = "gpt-4.1-test"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "gpt-4.1-upstream"

[[models]]
name = "o4-mini-test"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "o4-mini-upstream"

# Claude Code asks for models by Claude's names; this one is served by an
# OpenAI reasoning model, as teams route Claude Code to other providers.
[[models]]
name = "claude-openai-test"
[[models.deployments]]
provider = "openai"
base_url = "{openai}"
model = "o4-cc-upstream"

[[models]]
name = "claude-test"
[[models.deployments]]
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-upstream"
keys = ["ak-1"]

[[models]]
name = "fallback-test"
[[models.deployments]]
name = "fb-anthropic"
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-fb"
keys = ["ak-2"]
[[models.deployments]]
name = "fb-openai"
provider = "openai"
base_url = "{openai}"
model = "o4-fb"

[[models]]
name = "fallback-reverse-test"
[[models.deployments]]
name = "fbr-openai"
provider = "openai"
base_url = "{openai}"
model = "o4-fbr"
[[models.deployments]]
name = "fbr-anthropic"
provider = "anthropic"
base_url = "{anthropic}"
model = "claude-fbr"
keys = ["ak-3"]
"#,
        openai = up.openai_base(),
        anthropic = up.anthropic_base(),
    )
}

async fn start() -> (Upstream, Stack) {
    let up = Upstream::start().await;
    let path = std::env::temp_dir().join(format!("sluice-agent-clients-{}.toml", up.addr.port()));
    std::fs::write(&path, config(&up)).unwrap();
    let stack = Stack::start(Options {
        origin_env: vec![("SLUICE_CONFIG", path.display().to_string())],
        api_keys: vec![(KEY.into(), "agent-tester".into(), "admin")],
        ..Options::default()
    })
    .await;
    (up, stack)
}

/// Runs a client script (`node x.mjs SPEC` or `python3 x.py SPEC`) against
/// the edge; its output, or a failure with everything it printed.
async fn run(stack: &Stack, program: &str, script: &str, spec: Value) -> String {
    let out = tokio::process::Command::new(program)
        .arg(clients().join(script))
        .arg(spec.to_string())
        .current_dir(clients())
        .env("SLUICE_EDGE", &stack.edge)
        .env("SLUICE_API_KEY", KEY)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {program} {script}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{script} {spec} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The requests an upstream model received, in order.
fn seen(up: &Upstream, model: &str) -> Vec<Value> {
    up.seen()
        .into_iter()
        .filter(|s| s.model == model)
        .map(|s| s.body)
        .collect()
}

/// Anthropic requests with thinking on in the middle of a tool loop (their
/// last message holds tool results): each carried the loop's thinking, since
/// the upstream refuses such a request without it.
fn loops_with_thinking(requests: &[Value]) -> usize {
    requests
        .iter()
        .filter(|r| {
            let last = r["messages"].as_array().unwrap().last().unwrap();
            let results = last["content"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
            results && r["thinking"]["type"] == "enabled"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn vercel_ai_sdk_runs_multi_turn_tool_loops_on_both_formats() {
    let (up, stack) = start().await;
    let vercel = |spec: Value| run(&stack, "node", "vercel_ai.mjs", spec);

    // The default provider speaks Responses with `store` on: from the second
    // step on it sends earlier output items back as `item_reference`s.
    vercel(json!({"provider": "responses", "model": "gpt-4.1-test", "turns": 5})).await;
    let references = seen(&up, "gpt-4.1-upstream");
    assert_eq!(references.len(), 10, "five turns of two steps");
    vercel(
        json!({"provider": "responses", "model": "claude-test", "turns": 5, "stream": true,
        "reasoning": "low"}),
    )
    .await;
    let claude = seen(&up, "claude-upstream");
    assert_eq!(claude.len(), 10);
    assert!(claude.iter().all(|r| r["thinking"]["type"] == "enabled"));
    assert_eq!(
        loops_with_thinking(&claude),
        5,
        "each turn's step after its tool call"
    );

    // `.chat` never sends `thinking_blocks` back: the gateway keeps them.
    vercel(json!({"provider": "chat", "model": "claude-test", "turns": 3, "reasoning": "low"}))
        .await;
    let claude = seen(&up, "claude-upstream");
    assert_eq!(claude.len(), 16);
    assert_eq!(
        loops_with_thinking(&claude[10..]),
        3,
        "each turn's step after its tool call"
    );
    vercel(
        json!({"provider": "chat", "model": "o4-mini-test", "turns": 3, "stream": true,
        "reasoning": "low"}),
    )
    .await;

    // `@ai-sdk/anthropic`: natively, with thinking, and translated for
    // OpenAI deployments, an image returned by a tool included.
    vercel(
        json!({"provider": "anthropic", "model": "claude-test", "turns": 3, "stream": true,
        "reasoning": "low"}),
    )
    .await;
    vercel(
        json!({"provider": "anthropic", "model": "o4-mini-test", "turns": 2,
        "reasoning": "low"}),
    )
    .await;
    vercel(json!({"provider": "anthropic", "model": "gpt-4.1-test", "turns": 2, "image": true}))
        .await;
    let translated = seen(&up, "gpt-4.1-upstream");
    let with_image = translated
        .iter()
        .filter(|r| {
            r["messages"].as_array().unwrap().iter().any(|m| {
                m["role"] == "user"
                    && m["content"].as_array().is_some_and(|parts| {
                        parts.iter().any(|p| {
                            p["image_url"]["url"]
                                .as_str()
                                .is_some_and(|u| u.starts_with("data:image/png;base64,"))
                        })
                    })
            })
        })
        .count();
    assert!(
        with_image >= 2,
        "the tool's image reached the OpenAI upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_agents_sdk_runs_reasoning_tool_loops_on_both_formats() {
    let (up, stack) = start().await;
    let agents = |spec: Value| run(&stack, "python3", "agents_sdk.py", spec);
    for api in ["responses", "chat"] {
        for model in ["claude-test", "o4-mini-test", "gpt-4.1-test"] {
            let reasoning = (model != "gpt-4.1-test").then_some("low");
            agents(json!({"api": api, "model": model, "turns": 3, "reasoning": reasoning})).await;
            agents(
                json!({"api": api, "model": model, "turns": 2, "reasoning": reasoning,
                "stream": true}),
            )
            .await;
        }
    }
    // A tool's image (a function output of `input_image`s): Anthropic takes it
    // in the tool result, an OpenAI upstream in a user message after it.
    // (The SDK's chat model drops images from tool outputs itself.)
    for model in ["claude-test", "gpt-4.1-test"] {
        agents(json!({"api": "responses", "model": model, "turns": 1, "image": true})).await;
    }
    // Five reasoning turns on each API, each one tool loop: every step after
    // the tool call kept its thinking (the upstream refuses thinking on a
    // loop that lost it, so Sluice would have turned thinking off).
    let claude = seen(&up, "claude-upstream");
    assert_eq!(loops_with_thinking(&claude), 10);
    assert!(
        seen(&up, "o4-mini-upstream")
            .iter()
            .all(|r| r.get("max_tokens").is_none())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn langchain_chat_openai_runs_tool_loops_on_both_formats() {
    let (up, stack) = start().await;
    let langchain = |spec: Value| run(&stack, "python3", "langchain_loop.py", spec);
    for responses in [false, true] {
        for model in ["claude-test", "o4-mini-test"] {
            langchain(json!({"responses": responses, "model": model, "turns": 2,
                "reasoning": "low"}))
            .await;
            langchain(json!({"responses": responses, "model": model, "turns": 2,
                "reasoning": "low", "stream": true}))
            .await;
        }
        langchain(json!({"responses": responses, "model": "gpt-4.1-test", "turns": 2})).await;
    }
    let claude = seen(&up, "claude-upstream");
    assert_eq!(loops_with_thinking(&claude), 8, "two turns of four runs");
}

/// The test upstream's scripted model breaks the loop's next step off to
/// the fallback: a tool loop begun on one format continues on the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_between_formats_mid_loop_keeps_the_loop_going() {
    let (up, stack) = start().await;
    // Anthropic primary answers the tool call (with thinking), then breaks:
    // the OpenAI reasoning fallback answers the rest.
    up.for_model_after("claude-fb", 1, Behaviour::Status(500, None));
    run(
        &stack,
        "python3",
        "agents_sdk.py",
        json!({"api": "chat", "model": "fallback-test", "turns": 2, "reasoning": "low"}),
    )
    .await;
    let fallback = seen(&up, "o4-fb");
    assert!(!fallback.is_empty());
    assert!(
        fallback.iter().all(|r| r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("thinking_blocks").is_none())),
        "Anthropic's thinking never reaches OpenAI"
    );
    // OpenAI primary answers the tool call, then breaks: the Anthropic
    // fallback has no thinking for that loop and goes on without it for
    // that step, then thinks again on the next turn.
    up.for_model_after("o4-fbr", 1, Behaviour::Status(500, None));
    run(
        &stack,
        "node",
        "vercel_ai.mjs",
        json!({"provider": "chat", "model": "fallback-reverse-test", "turns": 2,
            "reasoning": "low"}),
    )
    .await;
    let anthropic = seen(&up, "claude-fbr");
    assert!(
        anthropic[0].get("thinking").is_none(),
        "the loop without kept thinking"
    );
    assert!(
        anthropic[1]["thinking"].is_object(),
        "a new turn thinks again"
    );
    assert_eq!(
        loops_with_thinking(&anthropic),
        1,
        "the second turn's loop kept its thinking"
    );
}

/// A PNG of `width` x `height` noise-like pixels (stored, not compressed),
/// as large as a screenshot is; `seed` makes each one different.
fn screenshot_png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn adler(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in data {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    for _ in 0..height {
        let row = (0..width * 3).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        });
        // Each row starts with its filter byte: none.
        raw.extend(std::iter::once(0).chain(row));
    }
    // zlib with stored (uncompressed) deflate blocks of at most 65535 bytes.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        zlib.extend((block.len() as u16).to_le_bytes());
        zlib.extend((!(block.len() as u16)).to_le_bytes());
        zlib.extend(*block);
    }
    zlib.extend(adler(&raw).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// `claude -p` in `dir` against the edge (a fresh home, so no user settings),
/// continuing the directory's last session when `resume`; its JSON result.
async fn claude_code(
    stack: &Stack,
    dir: &std::path::Path,
    model: &str,
    prompt: &str,
    resume: bool,
) -> Value {
    let mut command = tokio::process::Command::new(clients().join("node_modules/.bin/claude"));
    command
        .arg("-p")
        .arg(prompt)
        .args([
            "--model",
            model,
            "--output-format",
            "json",
            "--max-turns",
            "6",
        ])
        .args(["--allowedTools", "Read,Bash"])
        .current_dir(dir)
        .env("HOME", dir.join("home"))
        .env("ANTHROPIC_BASE_URL", &stack.edge)
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_SMALL_FAST_MODEL", model)
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", model)
        .env("MAX_THINKING_TOKENS", "31999")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1");
    if resume {
        command.arg("--continue");
    }
    let out = command.output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "claude -p {prompt:?} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("claude's output {stdout}: {e}"))
}

/// A session of two `claude -p` runs in a fresh directory: a screenshot and
/// a shell command, then (`--continue`) two more screenshots; each run's
/// result text.
async fn screenshot_session(stack: &Stack, model: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(sluice_e2e::unique("claude-code"));
    std::fs::create_dir_all(dir.join("home")).unwrap();
    for i in 1..=3 {
        let png = screenshot_png(1000, 750, i);
        std::fs::write(dir.join(format!("shot{i}.png")), png).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "the build is green\n").unwrap();
    let read = |i: u32| {
        format!(
            "CALL Read {{\"file_path\":\"{}\"}}",
            dir.join(format!("shot{i}.png")).display()
        )
    };
    let first = claude_code(
        stack,
        &dir,
        model,
        &format!(
            "Look at the screenshot, then at the notes.\n{}\nCALL Bash {{\"command\":\"cat notes.txt\",\"description\":\"Read the notes\"}}",
            read(1)
        ),
        false,
    )
    .await;
    let second = claude_code(
        stack,
        &dir,
        model,
        &format!("And these two.\n{} && {}", read(2), read(3)),
        true,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let text = |v: &Value| v["result"].as_str().unwrap_or_default().to_string();
    (text(&first), text(&second))
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_sessions_with_screenshots_on_both_formats() {
    let (up, stack) = start().await;
    for (model, upstream) in [
        ("claude-test", "claude-upstream"),
        ("claude-openai-test", "o4-cc-upstream"),
    ] {
        let (first, second) = screenshot_session(&stack, model).await;
        assert!(
            first.starts_with("Done after 2 tool rounds") && first.contains("the build is green"),
            "{model}: {first}"
        );
        assert!(
            second.starts_with("Done after 1 tool rounds")
                && second.matches("[image/").count() == 2,
            "{model}: both screenshots reached the model: {second}"
        );
        let requests = seen(&up, upstream);
        let largest = requests.iter().map(|r| r.to_string().len()).max().unwrap();
        assert!(
            largest > 1 << 20,
            "{model}: the session passed 1 MiB ({largest} bytes)"
        );
    }
    // Translated for the OpenAI reasoning model: the cap it takes, reasoning
    // from Claude Code's thinking, the screenshots in a user message.
    let last = seen(&up, "o4-cc-upstream").pop().unwrap();
    assert!(last.get("max_tokens").is_none() && last["max_completion_tokens"].is_u64());
    assert!(
        last["reasoning_effort"].is_string(),
        "{}",
        last["reasoning_effort"]
    );
    let images = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "image_url")
        .count();
    assert_eq!(images, 3, "every screenshot of the session");
}

/// Claude Code on Claude through AWS Bedrock: Sluice sends its Messages
/// calls to `InvokeModel` (SigV4-signed, event-stream answers) at the test
/// Bedrock, which checks them as Bedrock does and has the scripted
/// Anthropic upstream answer, as Bedrock has Claude answer.
#[tokio::test(flavor = "multi_thread")]
async fn claude_code_sessions_on_claude_through_bedrock() {
    let up = Upstream::start().await;
    let bedrock = sluice_e2e::TestBedrock::start(Some(&up.anthropic_base()));
    let path = std::env::temp_dir().join(format!("sluice-agent-bedrock-{}.toml", up.addr.port()));
    std::fs::write(
        &path,
        format!(
            r#"
[routing]
attempts = 1

[[models]]
name = "claude-bedrock-test"
[[models.deployments]]
provider = "bedrock"
base_url = "{}"
region = "us-east-1"
model = "us.anthropic.claude-bedrock-upstream"
aws = {{ access_key_id = "AKIDSLUICETEST", secret_access_key_env = "TEST_AWS_SECRET" }}
"#,
            bedrock.base
        ),
    )
    .unwrap();
    let stack = Stack::start(Options {
        origin_env: vec![
            ("SLUICE_CONFIG", path.display().to_string()),
            ("TEST_AWS_SECRET", "sluice-test-secret/with+chars".into()),
        ],
        api_keys: vec![(KEY.into(), "agent-tester".into(), "admin")],
        ..Options::default()
    })
    .await;
    let (first, second) = screenshot_session(&stack, "claude-bedrock-test").await;
    assert!(
        first.starts_with("Done after 2 tool rounds") && first.contains("the build is green"),
        "{first}"
    );
    assert!(
        second.starts_with("Done after 1 tool rounds") && second.matches("[image/").count() == 2,
        "both screenshots reached the model: {second}"
    );
    let requests = seen(&up, "us.anthropic.claude-bedrock-upstream");
    // Claude Code's thinking setting reached Claude as it sent it, and each
    // turn of the loop carried the signed thinking Claude gave, which came
    // back through Bedrock's event stream.
    assert!(requests.iter().all(|r| r["thinking"].is_object()));
    let signed_loops = requests
        .iter()
        .filter(|r| {
            r["messages"].as_array().unwrap().iter().any(|m| {
                m["role"] == "assistant"
                    && m["content"][0]["type"] == "thinking"
                    && m["content"][0]["signature"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
            })
        })
        .count();
    assert!(signed_loops >= 2, "{signed_loops} of {}", requests.len());
    let calls = bedrock.seen().await;
    let invoked: Vec<&Value> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "invoke-with-response-stream")
        .collect();
    assert!(invoked.len() >= 3, "{}", invoked.len());
    assert!(invoked.iter().all(|c| c["auth"]["kind"] == "sigv4"));
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_keeps_working_across_a_fallback_mid_loop() {
    let (up, stack) = start().await;
    // Anthropic answers the first step (with thinking), then breaks: OpenAI
    // serves the rest of the loop, translated.
    up.for_model_after("claude-fb", 1, Behaviour::Status(500, None));
    let (first, second) = screenshot_session(&stack, "fallback-test").await;
    assert!(first.starts_with("Done after 2 tool rounds"), "{first}");
    assert!(second.matches("[image/").count() == 2, "{second}");
    assert!(!seen(&up, "o4-fb").is_empty());
    // OpenAI answers first, then breaks: Anthropic continues a loop whose
    // thinking it never made, without thinking for that step.
    up.for_model_after("o4-fbr", 1, Behaviour::Status(500, None));
    let (first, second) = screenshot_session(&stack, "fallback-reverse-test").await;
    assert!(first.starts_with("Done after 2 tool rounds"), "{first}");
    assert!(second.matches("[image/").count() == 2, "{second}");
    let anthropic = seen(&up, "claude-fbr");
    assert!(
        anthropic[0].get("thinking").is_none(),
        "{}",
        anthropic[0]["thinking"]
    );
}

/// What a translation had to drop or change is said in `x-sluice-adjusted`,
/// streamed or not.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_translation_drops_or_changes_is_said_in_a_header() {
    let (_up, stack) = start().await;
    let client = reqwest::Client::new();
    let adjusted = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-sluice-adjusted")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});

    // Claude Code's fields with no OpenAI counterpart, on an OpenAI deployment.
    let response = client
        .post(format!("{}/v1/messages", stack.edge))
        .header("x-api-key", KEY)
        .json(
            &json!({"model": "claude-openai-test", "max_tokens": 32000, "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let said = adjusted(&response);
    assert!(
        said.contains("top_k:dropped") && said.contains("context_management:dropped"),
        "{said}"
    );

    // A forced tool with reasoning on Anthropic: the tool wins, thinking is off.
    for stream in [false, true] {
        let response = client
            .post(format!("{}/v1/chat/completions", stack.edge))
            .bearer_auth(KEY)
            .json(
                &json!({"model": "claude-test", "reasoning_effort": "high", "stream": stream,
                "tool_choice": "required", "tools": [weather],
                "messages": [{"role": "user", "content": "weather?"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            adjusted(&response),
            "thinking:disabled (tool_choice forces a tool)"
        );
        let _ = response.text().await.unwrap();
    }

    // A reasoning model's cap, and Sluice's own thinking field, on OpenAI.
    let response = client
        .post(format!("{}/v1/chat/completions", stack.edge))
        .bearer_auth(KEY)
        .json(
            &json!({"model": "o4-mini-test", "reasoning_effort": "low", "max_tokens": 300,
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "thinking_blocks": [{"type": "thinking",
                    "thinking": "t", "signature": "s"}]},
                {"role": "user", "content": "again"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(
        adjusted(&response),
        "messages.thinking_blocks:dropped, max_tokens:sent_as_max_completion_tokens"
    );
}
