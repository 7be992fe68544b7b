"""Weights by name and by URL (issue 28): `--weights imagenet` loads the file a spec's
`keras:` section records and `--weights URL --weights-sha256 HEX` any file, both downloaded
with keras.utils.get_file into Keras' cache ($KERAS_HOME/models) and checked by hash. The
files are served by a local http.server on 127.0.0.1 (nothing leaves the machine); the
weights are a Keras model written by hand with keras.layers, so what loads is checked
against a model archspec did not build."""

import functools
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from archspec.cli import main

SPEC = """\
format: 1
name: tiny
input: {{shape: [12, 12, 3]}}
stem: [{{type: conv, name: c1, filters: 8, kernel: 3}}]
head:
  classes: 3
  layers: [{{type: global_pool, name: gap}}, {{type: classifier, name: predictions}}]
keras:
  constructor: Tiny
  weights:
    imagenet:
      top: {{url: "{url}", hash: "{hash}"}}
"""


def by_hand():
    import keras

    L = keras.layers
    inp = keras.Input((12, 12, 3), name="input_layer")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="predictions")(x))


class Server:
    """A local HTTP server for a directory, counting the requests it answered."""

    def __init__(self, directory):
        self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(handler, *args):
                self.requests.append(handler.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler,
                                                                                          directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from parity import randomize

    d = tmp_path_factory.mktemp("served")
    ref = by_hand()
    randomize(ref)
    ref.save_weights(d / "tiny.weights.h5")
    data = (d / "tiny.weights.h5").read_bytes()
    (d / "broken.weights.h5").write_bytes(data + b"tampered")  # loads, but is not the published file
    server = Server(d)
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    yield {"server": server, "dir": d, "sha256": hashlib.sha256(data).hexdigest(),
           "md5": hashlib.md5(data).hexdigest(), "x": x, "expected": np.asarray(ref(x))}
    server.close()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def spec_file(tmp_path, url, hash_):
    p = tmp_path / "tiny.yaml"
    p.write_text(SPEC.format(url=url, hash=hash_))
    return p


def outputs_of(path, x):
    import keras

    import archspec  # noqa: F401 - registers archspec's layers for load_model

    return np.asarray(keras.models.load_model(path)(x))


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_weights_by_name_download_once_into_keras_cache_then_load_offline(served, keras_home, tmp_path, capsys):
    srv = served["server"]
    spec = spec_file(tmp_path, f"{srv.url}/tiny.weights.h5", served["md5"])  # keras' md5 form
    out = tmp_path / "a.keras"
    assert main(["build", str(spec), "--weights", "imagenet", "-o", str(out)]) == 0
    cached = keras_home / "models" / "tiny.weights.h5"
    assert cached.read_bytes() == (served["dir"] / "tiny.weights.h5").read_bytes()
    np.testing.assert_allclose(outputs_of(out, served["x"]), served["expected"], atol=1e-6, rtol=0)
    assert srv.requests == ["/tiny.weights.h5"]
    err = capsys.readouterr()
    assert "downloading" in err.err and "downloading" not in err.out  # stdout stays the command's
    # the second time, the cached file (its hash checked) is used: no request
    assert main(["build", str(spec), "--weights", "imagenet", "-o", str(tmp_path / "b.keras")]) == 0
    assert srv.requests == ["/tiny.weights.h5"]
    # export takes the same name
    assert main(["export", str(spec), "--weights", "imagenet", "-o", str(tmp_path / "t.onnx"), "--samples", "2"]) == 0
    assert srv.requests == ["/tiny.weights.h5"]


def test_weights_by_url_need_and_check_a_sha256(served, keras_home, tmp_path, capsys):
    srv = served["server"]
    spec = spec_file(tmp_path, f"{srv.url}/unused.h5", served["md5"])
    url = f"{srv.url}/tiny.weights.h5"
    out = tmp_path / "u.keras"
    assert main(["build", str(spec), "--weights", url, "-o", str(out)]) == 2
    assert "a URL needs --weights-sha256 HEX" in capsys.readouterr().err
    assert main(["build", str(spec), "--weights", url, "--weights-sha256", served["sha256"], "-o", str(out)]) == 0
    np.testing.assert_allclose(outputs_of(out, served["x"]), served["expected"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", ["wrong hash", "unreachable", "not on the server", "cached file differs",
                                  "no published weights"])
def test_a_download_that_fails_is_one_line_naming_the_url_and_the_cache_path(served, keras_home, tmp_path, capsys,
                                                                                case):
    srv = served["server"]
    cached = keras_home / "models" / "tiny.weights.h5"
    url, hash_ = f"{srv.url}/tiny.weights.h5", served["sha256"]
    if case == "wrong hash":
        url = f"{srv.url}/broken.weights.h5"
        cached = keras_home / "models" / "broken.weights.h5"
    elif case == "unreachable":
        url = f"http://127.0.0.1:{closed_port()}/tiny.weights.h5"
    elif case == "not on the server":
        url = f"{srv.url}/gone.weights.h5"
        cached = keras_home / "models" / "gone.weights.h5"
    elif case == "cached file differs":
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"the user's own file")
    spec = spec_file(tmp_path, url, hash_)
    if case == "no published weights":
        spec.write_text(spec.read_text().replace("imagenet:", "other:"))
    out = tmp_path / "x.keras"
    assert main(["build", str(spec), "--weights", "imagenet", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()
    if case == "no published weights":
        assert "no published weights named 'imagenet' for tiny; its published weights: other" in err
        return
    assert url in err and str(cached) in err, err
    if case == "cached file differs":
        assert "move it away" in err and cached.read_bytes() == b"the user's own file"  # never deleted
    else:
        assert not cached.exists()  # nothing half-downloaded or unverified is kept
        assert ("does not have the sha256" if case == "wrong hash" else "cannot download") in err
        if case == "not on the server":
            assert ": 404 File not found;" in err


def test_a_file_keras_publishes_without_hash_loads_and_its_sha256_is_reported(served, keras_home, tmp_path, capsys):
    """keras gives get_file no hash for MobileNet's and MobileNetV2's files: archspec takes
    them as keras does and says the sha256 of what it used."""
    srv = served["server"]
    spec = spec_file(tmp_path, f"{srv.url}/tiny.weights.h5", "x")
    spec.write_text(spec.read_text().replace('hash: "x"', "hash: null"))
    out = tmp_path / "n.keras"
    assert main(["build", str(spec), "--weights", "imagenet", "-o", str(out)]) == 0
    assert f"has sha256 {served['sha256']}" in capsys.readouterr().err
    np.testing.assert_allclose(outputs_of(out, served["x"]), served["expected"], atol=1e-6, rtol=0)
