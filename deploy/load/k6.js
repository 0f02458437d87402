// k6 load test with the seed's stages: warm-up to 100 users, ramps to 300,
// 500, 800 and 1000, then a sustained phase. Through the edge:
//   SLUICE_URL=http://127.0.0.1:3000 SLUICE_KEY=sk-... k6 run deploy/load/k6.js
// SLUICE_CACHE_SHARE (0-1) of calls repeat a small prompt set (edge cache hits).
import http from "k6/http";
import { check, sleep } from "k6";
import { Rate, Trend } from "k6/metrics";

const BASE = __ENV.SLUICE_URL || "http://127.0.0.1:3000";
const KEY = __ENV.SLUICE_KEY || "sk-sluice-demo-key";
const MODEL = __ENV.SLUICE_MODEL || "sluice-sim-1";
const CACHE_SHARE = Number(__ENV.SLUICE_CACHE_SHARE || "0.5");

export const options = {
  stages: [
    { duration: "2m", target: 100 },
    { duration: "5m", target: 300 },
    { duration: "5m", target: 500 },
    { duration: "5m", target: 800 },
    { duration: "5m", target: 1000 },
    { duration: "10m", target: 1000 },
    { duration: "2m", target: 0 },
  ],
  thresholds: {
    http_req_failed: ["rate<0.01"],
    http_req_duration: ["p(95)<300", "p(99)<1000"],
  },
};

const cacheHits = new Rate("sluice_cache_hits");
const generation = new Trend("sluice_generation_ms", true);

export default function () {
  const repeat = Math.random() < CACHE_SHARE;
  const prompt = repeat
    ? `popular question ${Math.floor(Math.random() * 20)}`
    : `question ${__VU}-${__ITER}-${Math.random()}`;
  const res = http.post(
    `${BASE}/v1/chat/completions`,
    JSON.stringify({ model: MODEL, messages: [{ role: "user", content: prompt }], max_tokens: 32 }),
    { headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" } },
  );
  check(res, {
    "status is 200 or 429": (r) => r.status === 200 || r.status === 429,
    "has a choice": (r) => r.status !== 200 || (r.json("choices") || []).length > 0,
  });
  cacheHits.add(res.headers["X-Cache"] === "HIT");
  if (res.status === 200) generation.add(res.timings.duration);
  sleep(Math.random() * 2);
}
