"""`mage serve`'s OpenAI-compatible API on a tiny random MAGE, through the `openai` client and raw HTTP on loopback:
answers equal greedy `generate`, streaming, batching of concurrent requests, the 429 of a full queue, and every bad
input answered with a 4xx JSON error while the server keeps serving."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("fastapi") is None:  # not imported yet
    pytest.skip("needs the serve extra (gradio, fastapi, uvicorn)", allow_module_level=True)
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from inference.generation import generate_text  # noqa: E402
from mage_cli.serving.app import ServeOptions, Server, build_app  # noqa: E402

QUESTIONS = ["What is in the image?", "What colour is the large shape?"]


def shapeworld_images(n: int = 4, size: int = 64) -> list:
    import random

    from shapeworld.world import get_difficulty, render_scene, sample_scene

    rng = random.Random(7)
    return [render_scene(sample_scene(rng, get_difficulty("default"), f"t{i}"), size) for i in range(n)]


def data_url(image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def user(text: str, image=None) -> list[dict]:
    parts = [{"type": "text", "text": text}]
    if image is not None:
        parts.insert(0, {"type": "image_url", "image_url": {"url": data_url(image)}})
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def model_pair():
    """A tiny MAGE whose greedy answers differ between images and questions (seed 3; seed 0 says the same to all),
    in float64, so that a near tie between a random model's top two logits cannot be flipped by float rounding that
    depends on the batch shape: the comparisons with `generate` test the batching and padding themselves."""
    import torch

    from mage_testing.tiny import build_tiny_mage

    model, processor = build_tiny_mage(seed=3)
    return model.to(torch.float64), processor


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allowed")
    shapeworld_images(1)[0].save(folder / "scene.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def server(model_pair, image_dir):
    model, processor = model_pair
    options = ServeOptions(
        model_name="tiny-mage",
        max_batch=8,
        max_queue=64,
        batch_window=0.1,
        image_dir=image_dir,
        agent=False,
        examples=0,
    )  # the default 25-MP image limit
    app, engine = build_app(model, processor, options)
    srv = Server(app).start()
    srv.engine = engine
    yield srv
    srv.stop()
    engine.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def expected(model_pair, question: str, image=None, max_new_tokens: int = 8) -> str:
    model, processor = model_pair
    return generate_text(model, processor, question, image=image, max_new_tokens=max_new_tokens)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny-mage"]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["max_batch"] == 8


def test_answers_equal_greedy_generate(server, client, model_pair):
    image = shapeworld_images(1)[0]
    want = expected(model_pair, QUESTIONS[0], image)
    reply = client.chat.completions.create(
        model="tiny-mage", messages=user(QUESTIONS[0], image), max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content == want and want
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model="tiny-mage", messages=user(QUESTIONS[0], image), max_tokens=8, temperature=0, stream=True
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == want and len(pieces) > 1  # streamed in several pieces
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # text only, and a local path under --image-dir (the same pixels as a data URL)
    assert client.chat.completions.create(model="m", messages=user("Hello"), max_tokens=6, temperature=0).choices[
        0
    ].message.content == expected(model_pair, "Hello", max_new_tokens=6)
    path_msg = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "scene.png"}},
                {"type": "text", "text": QUESTIONS[1]},
            ],
        }
    ]
    assert client.chat.completions.create(model="m", messages=path_msg, max_tokens=8, temperature=0).choices[
        0
    ].message.content == expected(model_pair, QUESTIONS[1], shapeworld_images(1)[0])


def test_multi_turn_with_a_system_message_equals_generate_on_the_chat_template(client, model_pair):
    """Several turns: the prompt is the checkpoint's chat template over the whole conversation, image in turn one."""
    import torch

    model, processor = model_pair
    image = shapeworld_images(2)[1]
    conversation = [
        {"role": "system", "content": "You describe pictures."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Shapes."}]},
        {"role": "user", "content": [{"type": "text", "text": QUESTIONS[1]}]},
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    want = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    messages = [
        {"role": "system", "content": "You describe pictures."},
        *user(QUESTIONS[0], image),
        {"role": "assistant", "content": "Shapes."},
        {"role": "user", "content": QUESTIONS[1]},
    ]
    reply = client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == want and want
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]


def test_stop_and_sampling_settings(client, model_pair):
    image = shapeworld_images(1)[0]
    want = expected(model_pair, QUESTIONS[0], image, max_new_tokens=8)
    stop = want[len(want) // 2 : len(want) // 2 + 2]
    cut = want[: want.index(stop)].rstrip()
    for stream in (False, True):
        reply = client.chat.completions.create(
            model="m", messages=user(QUESTIONS[0], image), max_tokens=8, temperature=0, stop=[stop], stream=stream
        )
        text = "".join(c.choices[0].delta.content or "" for c in reply) if stream else reply.choices[0].message.content
        assert text == cut
    sampled = client.chat.completions.create(
        model="m", messages=user(QUESTIONS[0], image), max_tokens=5, temperature=0.8, top_p=0.9, seed=1
    )
    assert sampled.choices[0].message.content is not None and sampled.usage.completion_tokens <= 5


def test_32_concurrent_requests_are_batched(server, client, model_pair, caplog):
    images = shapeworld_images(4)
    want = {(i, q): expected(model_pair, QUESTIONS[q], images[i]) for i in range(4) for q in range(2)}
    assert len(set(want.values())) > 1  # the answers tell the inputs apart
    caplog.set_level(logging.INFO, logger="serving")
    before = len(server.engine.batches)

    def ask(k: int) -> tuple[int, str]:
        i, q = k % 4, (k // 4) % 2
        kwargs = dict(model="m", messages=user(QUESTIONS[q], images[i]), max_tokens=8, temperature=0)
        if k % 2:
            text = "".join(
                c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True)
            )
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        return k, text

    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(32), timeout=120))
    assert time.monotonic() - t0 < 120
    assert len(answers) == 32
    for k, text in answers:
        assert text == want[(k % 4, (k // 4) % 2)], k
    sizes = server.engine.batches[before:]
    assert sum(sizes) == 32 and max(sizes) > 1 and max(sizes) <= 8
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch of ")]
    assert any(m.startswith("batch of ") and not m.startswith("batch of 1 ") for m in logged), logged


def test_full_queue_answers_429(model_pair):
    model, processor = model_pair
    app, engine = build_app(model, processor, ServeOptions(max_queue=2, max_batch=2, agent=False, examples=0))
    srv = Server(app).start()
    try:
        gate = engine.hold()
        time.sleep(0.3)  # the worker sees the hold before the queue fills
        body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0}
        results = []
        waiting = [
            threading.Thread(
                target=lambda: results.append(httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=60))
            )
            for _ in range(2)
        ]
        for t in waiting:
            t.start()
        deadline = time.monotonic() + 20
        while engine.queue.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.queue.qsize() == 2
        refused = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full" and "queue is full" in refused.json()["error"]["message"]
        gate.set()
        for t in waiting:
            t.join(timeout=60)
        assert [r.status_code for r in results] == [200, 200]
        assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    finally:
        srv.stop()
        engine.close()


def _big_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (10000, 5000)).save(buffer, format="PNG")  # 50 MP, 48 kB as a file
    return buffer.getvalue()


def _bad_requests(image_dir) -> list[tuple[str, object, int, str, str]]:
    """(name, body (bytes or JSON), status, error code, a piece of the message)."""
    good_png = data_url(shapeworld_images(1)[0])
    png_bytes = base64.b64decode(good_png.split(",", 1)[1])
    corrupt = "data:image/png;base64," + base64.b64encode(png_bytes[: len(png_bytes) // 2]).decode()
    not_image = "data:image/png;base64," + base64.b64encode(b"%PDF-1.4 this is not an image").decode()
    big = "data:image/png;base64," + base64.b64encode(_big_png()).decode()

    def img(url, text="What is it?"):
        return {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
                }
            ],
        }

    two = img(good_png)
    two["messages"][0]["content"].insert(0, {"type": "image_url", "image_url": {"url": good_png}})
    return [
        ("malformed JSON", b'{"model": "m", "messages": [', 400, "invalid_json", "not valid JSON"),
        ("not an object", b"[1, 2]", 400, "invalid_json", "JSON object"),
        ("non-image upload", img(not_image), 400, "invalid_image", "not an image"),
        ("corrupt image", img(corrupt), 400, "invalid_image", "corrupt"),
        (
            "too many pixels",
            img(big),
            400,
            "image_too_large",
            "10000x5000 = 50,000,000 pixels; this server takes at most 25,000,000",
        ),
        ("not base64", img("data:image/png;base64,@@@@"), 400, "invalid_image_url", "not valid base64"),
        (
            "empty message",
            {"model": "m", "messages": [{"role": "user", "content": "   "}]},
            400,
            "empty_message",
            "empty",
        ),
        ("no messages", {"model": "m", "messages": []}, 400, "invalid_messages", "non-empty list"),
        ("too many images", two, 400, "too_many_images", "2 in the conversation"),
        (
            "prompt longer than the context",
            {"model": "m", "messages": [{"role": "user", "content": "cir " * 3000}]},
            400,
            "context_length_exceeded",
            "context is 1024",
        ),
        (
            "max_tokens past the context",
            {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5000},
            400,
            "context_length_exceeded",
            "max_tokens is 5000",
        ),
        ("path outside the folder", img("../../etc/passwd"), 403, "path_not_allowed", "outside the allowed folder"),
        ("absolute path outside", img("file:///etc/hostname"), 403, "path_not_allowed", "outside"),
        ("missing file", img("nothing.png"), 400, "file_not_found", "not a file"),
        ("text file in the folder", img("notes.txt"), 400, "invalid_image", "not an image"),
        ("remote URL", img("https://example.com/a.png"), 400, "invalid_image_url", "not fetched"),
        (
            "image marker in text",
            {"model": "m", "messages": [{"role": "user", "content": "<image> hi"}]},
            400,
            "invalid_messages",
            "image marker",
        ),
        ("bad role", {"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_messages", "role"),
        (
            "bad temperature",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
            400,
            "invalid_request",
            "temperature must be a number",
        ),
        (
            "n > 1",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3},
            400,
            "invalid_request",
            "n must be 1",
        ),
    ]


def test_bad_inputs_are_4xx_json_and_the_server_lives(server, image_dir, model_pair):
    for name, body, status, code, words in _bad_requests(image_dir):
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = httpx.post(
            server.url + "/v1/chat/completions", timeout=60, headers={"Content-Type": "application/json"}, **kwargs
        )
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code and words in error["message"], (name, error)
        assert error["type"] == "invalid_request_error"
    ok = httpx.post(
        server.url + "/v1/chat/completions",
        timeout=60,
        json={"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0},
    )
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == expected(model_pair, "Hello", max_new_tokens=6)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_openai_client_sees_the_errors(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": ""}])
    assert "empty" in caught.value.body["message"]


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    from mage_cli.main import main

    (tmp_path / "empty").mkdir()
    cases = [
        (["--model", str(tmp_path / "empty")], "no config.json"),
        (["--model", "owner/name", "--max-batch", "0"], "--max-batch must be at least 1"),
        (["--model", "owner/name", "--port", "70000"], "--port must be in 0..65535"),
        (["--model", "owner/name", "--image-dir", str(tmp_path / "missing")], "is not a folder"),
        (["--model", "./not/here"], "neither a folder nor a Hub id"),
    ]
    for argv, words in cases:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mage serve: error: ") and words in err[0], err


@pytest.mark.slow
def test_cli_serves_a_checkpoint(tiny_mage_dir, tmp_path):
    """`mage serve` in its own process: it prints its URL, answers, and stops on SIGINT."""
    import os
    import re
    import signal
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mage_cli.main", "serve", "--model", str(tiny_mage_dir), "--port", "0", "--no-agent"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        url, lines = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        for _ in range(100):
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        reply = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
        )
        assert reply.status_code == 200 and reply.json()["model"] == tiny_mage_dir.name
        assert httpx.get(url + "/", timeout=30).status_code == 200  # the web chat is mounted on the same port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_json_error_shape():
    from mage_cli.serving.errors import RequestError

    body = RequestError(429, "full", code="queue_full").to_json()
    assert json.loads(json.dumps(body)) == {
        "error": {"message": "full", "type": "rate_limit_error", "param": None, "code": "queue_full"}
    }


def test_a_decompression_bomb_is_too_large_not_unreadable():
    """200 MP is past PIL's own bomb limit (it refuses to open it): still 'image_too_large', not 'not an image'."""
    from PIL import Image

    from mage_cli.serving.errors import RequestError
    from mage_cli.serving.images import decode_image

    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, format="PNG")
    with pytest.raises(RequestError) as caught:
        decode_image(buffer.getvalue(), what="the image")
    assert caught.value.status == 400 and caught.value.code == "image_too_large"
