"""Locust load test through the edge, with the k6 script's stages.

    SLUICE_KEY=sk-... locust -f deploy/load/locustfile.py --host http://127.0.0.1:3000 --headless

A custom LoadTestShape drives the seed's stages (100 -> 300 -> 500 -> 800 -> 1000
users, then sustained); SLUICE_STAGE_SCALE shortens every stage (0.1 = a tenth).
"""

import os
import random

from locust import HttpUser, LoadTestShape, between, task

KEY = os.environ.get("SLUICE_KEY", "sk-sluice-demo-key")
MODEL = os.environ.get("SLUICE_MODEL", "sluice-sim-1")
CACHE_SHARE = float(os.environ.get("SLUICE_CACHE_SHARE", "0.5"))
SCALE = float(os.environ.get("SLUICE_STAGE_SCALE", "1"))

# (seconds at the end of the stage, users)
STAGES = [(120, 100), (420, 300), (720, 500), (1020, 800), (1320, 1000), (1920, 1000)]


class GatewayUser(HttpUser):
    wait_time = between(0, 2)

    def on_start(self):
        self.client.headers.update({"Authorization": f"Bearer {KEY}"})

    @task(8)
    def chat(self):
        if random.random() < CACHE_SHARE:
            prompt = f"popular question {random.randrange(20)}"
        else:
            prompt = f"question {random.random()}"
        with self.client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 32},
            name="/v1/chat/completions",
            catch_response=True,
        ) as response:
            if response.status_code == 429:
                response.success()  # the rate limiter doing its job
            elif response.status_code != 200 or not response.json().get("choices"):
                response.failure(f"status {response.status_code}")

    @task(1)
    def models(self):
        self.client.get("/v1/models", name="/v1/models")

    @task(1)
    def job(self):
        response = self.client.post(
            "/v1/jobs",
            json={"model": MODEL, "messages": [{"role": "user", "content": "summarise this"}]},
            name="/v1/jobs",
        )
        if response.status_code == 202:
            self.client.get(f"/v1/jobs/{response.json()['job_id']}", name="/v1/jobs/{id}")


class SeedStages(LoadTestShape):
    def tick(self):
        elapsed = self.get_run_time()
        for end, users in STAGES:
            if elapsed < end * SCALE:
                return users, max(1, users // 10)
        return None
