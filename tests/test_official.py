"""`official:NAME` label files: the pinned table, the cache layout, download (from a local server, never the
network), sha256 verification, the offline message, and their use by `sln corrupt --inspect` and `sln train`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sln_cli.cli import app
from sln_cli.labels import official
from tests.synthetic import cifar_arrays, write_cifar10

runner = CliRunner()
N_TRAIN = 60

# The table of the issue, as written: NAME -> (repository, commit, path, sha256).
SLN = "chenpf1025/SLN@6a10a311b2d6540cd608b19712f18f10be9ab235"
IDN = "chenpf1025/IDN@24cd1154d2f0ab4baa7d23bd015be27ced07a383"
PINNED = {
    "cifar10/sym0.4": (SLN, "data/CIFAR10/label_noisy/sym0.4.csv",
                       "96c1bb492340f32681142d5cb2b0003c005227235e923b27ef86d2c11ab083d0"),
    "cifar10/asym0.4": (SLN, "data/CIFAR10/label_noisy/asym0.4.csv",
                        "eae3112b2e876f1ed375d2456b7d9b135b3b0f0c9e5c1a2d1b81417307d7d64c"),
    "cifar10/dependent0.4": (SLN, "data/CIFAR10/label_noisy/dependent0.4.csv",
                             "e56e57cd7ec402ead6cd65f6f64ca436c7d3e5cf4bdf174eb8a1efa1daa90dad"),
    "cifar100/sym0.4": (SLN, "data/CIFAR100/label_noisy/sym0.4.csv",
                        "e074d1181c8b297dd1e888a70bc8a959c26769c08fb4fadff58460f901d5f5fc"),
    "cifar100/asym0.4": (SLN, "data/CIFAR100/label_noisy/asym0.4.csv",
                         "a1fbcb8217b5c7dc68cc1f101d2034c634fce5e2b9f6ac34daadc5ca9826bd3c"),
    "cifar100/dependent0.4": (SLN, "data/CIFAR100/label_noisy/dependent0.4.csv",
                              "f5d3e4506550be0532344138d6f0fc82ac32472cf669acee43b8f190b8d260d7"),
    "cifar10/dependent0.1": (IDN, "data/CIFAR10/label_noisy/dependent0.1.csv",
                             "e8d7f988626668a42d54ae272a7e1fb92f6a0f17b8a99c139ca07764e2eed3d1"),
    "cifar10/dependent0.2": (IDN, "data/CIFAR10/label_noisy/dependent0.2.csv",
                             "3d6e4b5b8f4d5037f144c22deece477a9c429e9e08a487af69fe9643725f24ea"),
    "cifar10/dependent0.3": (IDN, "data/CIFAR10/label_noisy/dependent0.3.csv",
                             "c2ae5144d3c2ffc5f185ad5586ad80a9d1cb0acf7bb1edc259dfa9bc43d0671f"),
}


def test_the_pinned_table_is_the_issues() -> None:
    found = {name: (f"{f.repository}@{f.commit}", f.path, f.sha256) for name, f in official.OFFICIAL.items()}
    assert found == PINNED


def test_cache_layout_and_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLN_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("SLN_OFFICIAL_BASE_URL", raising=False)
    assert official.cached_path("cifar10/sym0.4") == tmp_path / "c" / "labels" / "cifar10-sym0.4.csv"
    assert official.url("cifar100/asym0.4") == ("https://raw.githubusercontent.com/chenpf1025/SLN/"
                                                "6a10a311b2d6540cd608b19712f18f10be9ab235/data/CIFAR100/label_noisy/"
                                                "asym0.4.csv")
    monkeypatch.delenv("SLN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert official.cached_path("cifar10/dependent0.1") == tmp_path / "home/.cache/sln/labels/cifar10-dependent0.1.csv"


def test_official_picks_the_file_of_the_setting() -> None:
    assert official.resolve_name("official", dataset="cifar10", mode="asym", rate=0.4) == "cifar10/asym0.4"
    assert official.resolve_name("official", dataset="cifar10", mode="dependent", rate=0.2) == "cifar10/dependent0.2"
    assert official.resolve_name("official:cifar100/sym0.4") == "cifar100/sym0.4"


# --- a synthetic "official" file served locally -----------------------------------------------------------------


def synthetic_csv(noisy_shift: int = 1) -> bytes:
    """An official-format CSV for the synthetic CIFAR-10 of `workdir` (every 3rd label shifted by one)."""
    clean = cifar_arrays(10, N_TRAIN, 10, seed=0)[1]
    noisy = np.where(np.arange(clean.size) % 3 == 0, (clean + noisy_shift) % 10, clean)
    return ("label,label_noisy\n" + "".join(f"{c},{n}\n" for c, n in zip(clean, noisy, strict=True))).encode()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DATA/ with synthetic CIFAR-10, an empty cache, every official file pinned to the synthetic CSV's sha256,
    and downloads pointed at a closed local port (no network) unless a test serves them."""
    write_cifar10(tmp_path / "DATA", n_train=N_TRAIN, n_test=10, seed=0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SLN_OFFICIAL_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    sha = hashlib.sha256(synthetic_csv()).hexdigest()
    pinned = {name: official.OfficialFile(f.repository, f.commit, f.path, sha) for name, f in official.OFFICIAL.items()}
    monkeypatch.setattr(official, "OFFICIAL", pinned)
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(root: Path, name: str, content: bytes) -> None:
    """Lay `content` out as the raw-file server does: <root>/<repository>/<commit>/<path>."""
    pinned = official.OFFICIAL[name]
    target = root / pinned.repository / pinned.commit / pinned.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An HTTP server on 127.0.0.1 serving tmp_path/served; downloads go there. Yields the served folder."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SLN_OFFICIAL_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    yield served
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def corrupt(*args: str):
    return runner.invoke(app, ["corrupt", *args])


def test_fetch_downloads_verifies_and_then_works_offline(workdir: Path, server: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    publish(server, "cifar10/sym0.4", synthetic_csv())
    result = corrupt("--fetch-official", "cifar10/sym0.4", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    cached = workdir / "cache" / "labels" / "cifar10-sym0.4.csv"
    assert row["status"] == "downloaded" and Path(row["path"]) == cached
    assert cached.read_bytes() == synthetic_csv()
    monkeypatch.setenv("SLN_OFFICIAL_BASE_URL", f"http://127.0.0.1:{closed_port()}")  # now offline
    again = corrupt("--fetch-official", "official:cifar10/sym0.4", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0]["status"] == "cached"


def test_fetch_from_a_file_url(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(workdir / "mirror", "cifar10/dependent0.3", synthetic_csv())
    monkeypatch.setenv("SLN_OFFICIAL_BASE_URL", (workdir / "mirror").as_uri())
    fetched = official.fetch("cifar10/dependent0.3")
    assert fetched["status"] == "downloaded" and fetched["path"].read_bytes() == synthetic_csv()


def test_a_tampered_download_is_refused_and_nothing_written(workdir: Path, server: Path) -> None:
    publish(server, "cifar10/sym0.4", synthetic_csv(noisy_shift=2))
    result = corrupt("--fetch-official", "cifar10/sym0.4")
    assert result.exit_code == 1
    assert official.OFFICIAL["cifar10/sym0.4"].sha256 in result.stderr and "nothing was written" in result.stderr
    assert not (workdir / "cache" / "labels").exists() or not any((workdir / "cache" / "labels").iterdir())


def test_a_tampered_cached_file_is_refused_and_kept(workdir: Path) -> None:
    cached = official.cached_path("cifar10/dependent0.4")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(synthetic_csv(noisy_shift=2))
    result = corrupt("--inspect", "official:cifar10/dependent0.4", "--json")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert official.OFFICIAL["cifar10/dependent0.4"].sha256 in result.stderr and str(cached) in result.stderr
    assert cached.read_bytes() == synthetic_csv(noisy_shift=2)  # not ours to delete


def test_offline_says_where_to_get_the_file_and_where_to_put_it(workdir: Path) -> None:
    result = corrupt("--inspect", "official:cifar10/asym0.4")
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot download official:cifar10/asym0.4")
    assert "no network?" in result.stderr and official.url("cifar10/asym0.4") in result.stderr
    assert str(workdir / "cache" / "labels" / "cifar10-asym0.4.csv") in result.stderr


def place(workdir: Path, name: str, content: bytes | None = None) -> Path:
    cached = official.cached_path(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(synthetic_csv() if content is None else content)
    return cached


def test_inspect_an_official_file_offline(workdir: Path) -> None:
    place(workdir, "cifar10/dependent0.4")
    result = corrupt("--inspect", "official:cifar10/dependent0.4", "--json", "--dataset", "cifar10",
                     "--data-dir", "DATA")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["num_samples"] == N_TRAIN and summary["num_mislabelled"] == N_TRAIN // 3
    assert summary["dataset"] == "cifar10"


@pytest.mark.slow  # a (one-epoch) training run
def test_train_with_the_presets_official_file_offline(workdir: Path) -> None:
    place(workdir, "cifar10/dependent0.4")
    result = runner.invoke(app, [
        "train", "--preset", "cifar10-dependent", "--labels", "official", "--data-dir", "DATA", "--epochs", "1",
        "--set", "model.name=mlp", "--device", "cpu", "--out", "runs/r", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    trained = np.loadtxt(workdir / "runs/r/labels.csv", delimiter=",", skiprows=1, dtype=np.int64)
    given = np.loadtxt(official.cached_path("cifar10/dependent0.4"), delimiter=",", skiprows=1, dtype=np.int64)
    np.testing.assert_array_equal(trained, given)
    manifest = json.loads((workdir / "runs/r/labels.json").read_text())
    assert manifest["official"] == "cifar10/dependent0.4"
    assert manifest["official_sha256"] == official.OFFICIAL["cifar10/dependent0.4"].sha256


@pytest.mark.parametrize(("args", "message"), [
    (("corrupt", "--inspect", "official:cifar10/sym0.8"), "unknown official label file 'cifar10/sym0.8'; known: "
                                                           "official:cifar10/sym0.4, "),
    (("corrupt", "--fetch-official", "cifar10/sym0.3"), "known: official:cifar10/sym0.4"),
    (("corrupt", "--fetch-official", "all", "--mode", "sym"), "drop --mode"),
    (("corrupt", "--inspect", "official"), "needs a preset's setting"),
    (("train", "--preset", "cifar10-sym", "--labels", "official", "--noise-rate", "0.2", "--data-dir", "DATA",
      "--set", "model.name=mlp", "--device", "cpu", "--out", "runs/x"),
     "no official label file for cifar10 with sym noise at rate 0.2"),
])
def test_errors(workdir: Path, args: tuple[str, ...], message: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr, result.stderr


def test_an_official_file_that_does_not_fit_the_dataset(workdir: Path) -> None:
    short = b"\n".join(synthetic_csv().splitlines()[:-1]) + b"\n"
    place(workdir, "cifar10/sym0.4", short)
    official.OFFICIAL["cifar10/sym0.4"] = official.OfficialFile("a/b", "c", "d", hashlib.sha256(short).hexdigest())
    result = corrupt("--inspect", "official:cifar10/sym0.4", "--dataset", "cifar10", "--data-dir", "DATA")
    assert result.exit_code == 1 and "made for another dataset or order" in result.stderr
