//! The client's address behind load balancers, through the real edge: with
//! no trusted proxies a spoofed `X-Forwarded-For` changes nothing (every
//! request counts against the peer); with the peer trusted, the real client
//! is limited through one hop and through two, whatever a client forges on
//! the left of the header.
#![expect(
    clippy::unwrap_used,
    reason = "tests: any failure should fail the test"
)]

use sluice_e2e::{DEMO_KEY, Options, Stack};

/// `GET /v1/me` as alice with `X-Forwarded-For: xff`: the status and the
/// requests the `ip` policy has left (from `RateLimit-Policy`'s sibling).
async fn me(edge: &str, xff: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{edge}/v1/me"))
        .bearer_auth(DEMO_KEY)
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap();
    let limit = response
        .headers()
        .get("ratelimit")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status().as_u16(), limit)
}

fn stack_options(trusted: &str) -> Options {
    Options {
        edge_variables: vec![
            ("rate_limit_free", "100000/1h".into()),
            ("rate_limit_ip", "3/1h".into()),
            ("trusted_proxies", trusted.into()),
        ],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_from_an_untrusted_peer_change_nothing() {
    let stack = Stack::start(stack_options("")).await;
    // Four clients, as the header claims: one peer, one bucket.
    let mut statuses = Vec::new();
    for fake in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"] {
        statuses.push(me(&stack.edge, fake).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn through_trusted_proxies_the_real_client_is_limited() {
    // The test's own connection (127.0.0.1) is the load balancer; 10/8 the
    // proxies behind it.
    let stack = Stack::start(stack_options("127.0.0.1/32, 10.0.0.0/8")).await;
    let edge = &stack.edge;

    // One hop: the balancer appended the client.
    for n in 0..3 {
        let (status, limit) = me(edge, "203.0.113.7").await;
        assert_eq!(status, 200);
        assert!(limit.contains(&format!("\"ip\";r={}", 2 - n)), "{limit}");
    }
    assert_eq!(me(edge, "203.0.113.7").await.0, 429);
    // Another client behind the same balancer has its own bucket.
    assert_eq!(me(edge, "203.0.113.8").await.0, 200);

    // Two hops (a proxy at 10.0.0.5 then the balancer), and a client that
    // forges a different address on the left each time: still one client.
    let mut statuses = Vec::new();
    for forged in ["9.9.9.1", "9.9.9.2", "9.9.9.3", "9.9.9.4"] {
        let xff = format!("{forged}, 203.0.113.9, 10.0.0.5");
        statuses.push(me(edge, &xff).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}
