"""`tenfold serve`: the JSON API through a real HTTP client, and the page in a real headless Chromium."""
import io
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from browser import ARTIFACTS, chromium, full_page_screenshot
from helpers import REPO, assert_one_line_error, class_image, make_tree, run_cli, wait_for

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """A LeNet-5 run of three colour classes (its test-time views: 1, so serving must apply them)."""
    data = make_tree(tmp_path_factory.mktemp("data"), classes=CLASSES, n=24)
    out = tmp_path_factory.mktemp("runs") / "lenet5"
    trained = run_cli("train", "--data", data, "--epochs", 3, "--tta", 1, "--out", out, "--quiet")
    assert trained.returncode == 0, trained.stderr
    return out


def start(run, *flags) -> tuple[subprocess.Popen, str]:
    """`tenfold serve RUN --port 0 FLAGS` started as a user would; the process and its address."""
    server = subprocess.Popen([sys.executable, "-m", "tenfold", "serve", str(run), "--port", "0", *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={k: v for k, v in os.environ.items() if k != "TENFOLD_DEBUG"})
    line = server.stdout.readline()
    assert line.startswith("serving "), (line, server.stderr.read() if server.poll() is not None else "")
    return server, line.split(" at ")[1].split()[0].rstrip("/")


@pytest.fixture(scope="module")
def server(served_run):
    process, url = start(served_run)
    wait_for(lambda: httpx.get(url + "/health").status_code == 200, "the server to answer", timeout=60)
    yield url
    process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
    assert process.wait(timeout=30) in (0, 130)
    assert "Traceback" not in process.stderr.read()


def png(cls: int, i: int, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    class_image(cls, 90_000 + i, size).save(buf, "PNG")
    return buf.getvalue()


def predict_cli(run, path) -> list[dict]:
    """What `tenfold predict` says of one file (the run's own test-time views), as the API's predictions."""
    result = run_cli("predict", run, path, "--json")
    assert result.returncode == 0, result.stderr
    return [{"class": p["class"], "probability": p["probability"]} for p in json.loads(result.stdout)[0]["top"]]


def test_health_names_the_run(server):
    health = httpx.get(server + "/health").json()
    assert health == {"status": "ok", "run": "lenet5", "model": "lenet5", "classes": list(CLASSES),
                      "image_size": [32, 32], "tta": 1, "max_upload_bytes": 10 * 2**20}


def test_predict_equals_tenfold_predict_as_multipart_or_raw_body(server, served_run, tmp_path):
    photo = tmp_path / "frog.png"
    photo.write_bytes(png(2, 1, (45, 37)))  # not the run's size: resized as predict resizes
    expected = predict_cli(served_run, photo)
    multipart = httpx.post(server + "/predict", files={"file": ("frog.png", photo.read_bytes(), "image/png")})
    raw = httpx.post(server + "/predict", content=photo.read_bytes(), headers={"Content-Type": "image/png"})
    for answer in (multipart, raw):
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        got = answer.json()["predictions"]
        assert [p["class"] for p in got] == [p["class"] for p in expected] and got[0]["class"] == "frog"
        assert all(abs(g["probability"] - e["probability"]) < 1e-6 for g, e in zip(got, expected))
    two = httpx.post(server + "/predict?top=2", content=photo.read_bytes()).json()["predictions"]
    assert [p["class"] for p in two] == [p["class"] for p in expected[:2]]


def test_twenty_concurrent_requests_each_get_their_own_answer(server):
    bodies = [(i % 3, png(i % 3, i)) for i in range(20)]

    def ask(item):
        cls, body = item
        answer = httpx.post(server + "/predict", files={"file": (f"{cls}.png", body, "image/png")}, timeout=120)
        return cls, answer.status_code, answer.json()["predictions"][0]["class"]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, bodies))
    assert all(status == 200 for _, status, _ in answers)
    assert [top for _, _, top in answers] == [CLASSES[cls] for cls, _, _ in answers]


@pytest.mark.parametrize("request_args, status, words", [
    (dict(method="POST", url="/predict", content=b"GIF89a but not really"), 400, "not a usable image"),
    (dict(method="POST", url="/predict", content=b""), 400, "no image"),
    (dict(method="POST", url="/predict", files={"note": ("a.txt", b"hello", "text/plain")}), 400, "not a usable"),
    (dict(method="POST", url="/predict", headers={"Content-Type": "multipart/form-data; boundary=x"},
          content=b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n'), 400, "has no file"),
    (dict(method="POST", url="/predict", content=b"\0" * (11 * 2**20)), 413, "over the limit of 10 MiB"),
    (dict(method="POST", url="/predict", files={"file": ("big.png", b"\0" * (11 * 2**20))}), 413, "10 MiB"),
    (dict(method="GET", url="/predict"), 405, "use POST"),
    (dict(method="DELETE", url="/"), 405, "not allowed"),
    (dict(method="GET", url="/nowhere"), 404, "no such page"),
    (dict(method="POST", url="/predict?top=0", content=b"x"), 400, "top must be"),
])
def test_a_bad_request_gets_one_line_of_json_and_the_server_stays_up(server, request_args, status, words):
    method, url = request_args.pop("method"), request_args.pop("url")
    answer = httpx.request(method, server + url, timeout=60, **request_args)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and words in body["error"] and "\n" not in body["error"]
    assert httpx.get(server + "/health").status_code == 200


def test_the_page_shows_the_top_3_of_a_file_chosen_through_its_own_input(server, tmp_path):
    photo = tmp_path / "a dog.png"
    photo.write_bytes(png(1, 5, (64, 48)))
    driver = chromium()
    try:
        driver.get(server + "/")
        from selenium.webdriver.common.by import By
        wait_for(lambda: "lenet5" in driver.find_element(By.ID, "about").text, "the page to load", 30)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait_for(lambda: driver.execute_script("return document.body.dataset.state") in ("done", "error"),
                 "the prediction", 60)
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#predictions li')].map(li => ({name: li.querySelector('.class')"
            ".textContent, width: parseFloat(li.querySelector('.bar > div').style.width)}))")
        preview = driver.execute_script("const i = document.getElementById('preview'); "
                                        "return [i.complete, i.naturalWidth, i.hidden]")
        console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR", "WARNING")]
        full_page_screenshot(driver, ARTIFACTS / "serve-page.png")
        error = driver.find_element(By.ID, "error").text
    finally:
        driver.quit()
    assert error == "" and len(rows) == 3 and rows[0]["name"] == "dog", (error, rows)
    assert rows[0]["width"] > rows[1]["width"] >= rows[2]["width"] > 0 and sum(r["width"] for r in rows) <= 100.5
    assert preview == [True, 64, False]  # the chosen image is shown beside its classes
    assert console == []


def test_a_taken_port_or_a_missing_run_is_a_one_line_error(served_run, tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(run_cli("serve", served_run, "--port", port), "address already in use", "--port")
    assert_one_line_error(run_cli("serve", tmp_path, "--port", 0), "not a tenfold run")
    assert_one_line_error(run_cli("serve", served_run, "--port", 70000), "--port must be 0-65535")
    # an address of no interface here (TEST-NET-1): refused by bind(), without a packet sent
    assert_one_line_error(run_cli("serve", served_run, "--host", "192.0.2.1", "--port", 0), "cannot listen on")
