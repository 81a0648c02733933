#!/usr/bin/env python3
"""Fixtures made by the Python tools Switchboard must interoperate with (run where torch,
safetensors and huggingface_hub are installed, e.g. the GPU machine):

    python3 scripts/make-interop-fixtures.py OUT [--ts-cache DIR]

OUT/pickle.tar        torch.save checkpoints for native/torch-checkpoint.ts, with safetensors
                      references of the same values:
                        r16-all.bin            PEFT's adapter_model.bin of test/fixtures/adapters/llama/r16-all
                        deflated.bin           the same, zip records deflated (torch.load reads it)
                        dtypes.bin/.safetensors OrderedDict of float16 / bfloat16 / float32 tensors
                        views.bin/.safetensors  shared storage, a storage offset, a transposed view, an nn.Parameter
                        state-dict.bin         nn.Module.state_dict() (an OrderedDict with _metadata)
                        int64.bin              a LongTensor (to be refused by dtype)
                        legacy.bin             the pre-1.6 (non-zip) format
                        malicious-system.bin   an object whose __reduce__ is os.system
                        malicious-eval.bin     an object whose __reduce__ is builtins.eval
OUT/py-cache.tar      a hub cache filled by huggingface_hub.snapshot_download from a local
                      Hub-shaped server serving test/fixtures/models/llama as acme/tiny-llama
OUT/interop.json      what huggingface_hub makes of the cache Switchboard filled (--ts-cache):
                      snapshot_download(local_files_only=True), scan_cache_dir, transformers loading it

Nothing reaches the network: the Hub is a local http.server.
"""

import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import socketserver
import sys
import tarfile
import tempfile
import threading
import traceback
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def make_pickles(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    r16 = load_file(ROOT / "test/fixtures/adapters/llama/r16-all/adapter_model.safetensors")
    # What PEFT's save_pretrained(safe_serialization=False) writes: torch.save of a plain dict.
    torch.save(dict(r16), out / "r16-all.bin")
    with zipfile.ZipFile(out / "r16-all.bin") as src, zipfile.ZipFile(out / "deflated.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    back = torch.load(out / "deflated.bin", weights_only=True)
    assert all(torch.equal(back[k], r16[k]) for k in r16), "torch reads the deflated copy"

    g = torch.Generator().manual_seed(7)
    dtypes = OrderedDict(
        [
            ("half", torch.randn(3, 5, generator=g).to(torch.float16)),
            ("bf16", torch.randn(4, 2, generator=g).to(torch.bfloat16)),
            ("f32", torch.randn(2, 3, 2, generator=g)),
            ("scalar", torch.tensor(1.5)),
        ]
    )
    torch.save(dtypes, out / "dtypes.bin")
    save_file({k: v.contiguous() for k, v in dtypes.items()}, out / "dtypes.safetensors")

    base = torch.arange(64, dtype=torch.float32) / 8
    views = {
        "whole": base.view(8, 8),
        "slice": base[8:24].view(4, 4),
        "transposed": base.view(8, 8).t(),
        "column": base.view(8, 8)[:, 3],
        "param": torch.nn.Parameter(torch.randn(2, 3, generator=g)),
    }
    torch.save(views, out / "views.bin")
    save_file({k: v.detach().contiguous().clone() for k, v in views.items()}, out / "views.safetensors")

    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict(), out / "state-dict.bin")
    torch.save({"ids": torch.arange(6)}, out / "int64.bin")
    torch.save({"w": torch.ones(2, 2)}, out / "legacy.bin", _use_new_zipfile_serialization=False)
    marker = "/tmp/switchboard-pickle-ran"
    torch.save({"w": torch.ones(2), "x": Evil(os.system, f"touch {marker}")}, out / "malicious-system.bin")
    torch.save({"w": Evil(eval, f"open('{marker}', 'w')")}, out / "malicious-eval.bin")
    assert not os.path.exists(marker)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def serve_hub(files: dict, repo: str, commit: str):
    """A local Hub: revision API, HEAD/GET resolve (LFS files redirect to /cdn/<sha256>), Range."""
    log = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, headers, body=b""):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _bytes(self, data, extra):
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                body = data[start:]
                self._send(206, {**extra, "Content-Length": str(len(body)), "Content-Range": f"bytes {start}-{len(data)-1}/{len(data)}"}, body)
            else:
                self._send(200, {**extra, "Content-Length": str(len(data))}, data)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            log.append(f"{self.command} {self.path}")
            path = self.path.split("?")[0]
            if path.startswith(f"/api/models/{repo}/revision/"):
                body = json.dumps({"id": repo, "sha": commit, "private": False, "siblings": [{"rfilename": f} for f in files]}).encode()
                return self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
            if path.startswith(f"/api/models/{repo}/tree/"):
                # list_repo_tree, which snapshot_download uses to list a commit's files.
                entries = []
                for name, data in files.items():
                    e = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
                    if name.endswith(".safetensors"):
                        e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(e)
                body = json.dumps(entries).encode()
                return self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
            if path.startswith("/cdn/"):
                sha = path[5:]
                for data in files.values():
                    if hashlib.sha256(data).hexdigest() == sha:
                        return self._bytes(data, {})
                return self._send(404, {"Content-Length": "0"})
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                rev, _, name = path[len(prefix):].partition("/")
                data = files.get(name)
                if data is None:
                    return self._send(404, {"X-Error-Code": "EntryNotFound", "Content-Length": "0"})
                if name.endswith(".safetensors"):
                    sha = hashlib.sha256(data).hexdigest()
                    # An absolute URL on another server, as the Hub's CDN is: huggingface_hub follows only relative redirects.
                    return self._send(302, {"Location": f"http://localhost:{cdn.server_address[1]}/cdn/{sha}", "X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": f'"{git_sha1(data)}"', "Content-Length": "0"})
                return self._bytes(data, {"X-Repo-Commit": commit, "ETag": f'"{git_sha1(data)}"'})
            self._send(404, {"X-Error-Code": "RepoNotFound", "Content-Length": "0"})

    class Dual(socketserver.ThreadingTCPServer):
        # The CDN answers as "localhost" on IPv6 and IPv4: another host name than the Hub's
        # 127.0.0.1, since huggingface_hub follows redirects within one host name.
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    hub = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    try:
        cdn = Dual(("::", 0), H)
    except OSError:
        cdn = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    for srv in (hub, cdn):
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    return hub, log


def python_cache(out_tar: Path, report: dict) -> None:
    model = ROOT / "test/fixtures/models/llama"
    files = {p.name: p.read_bytes() for p in sorted(model.iterdir())}
    commit = hashlib.sha1(b"".join(git_sha1(files[k]).encode() for k in sorted(files))).hexdigest()
    srv, log = serve_hub(files, "acme/tiny-llama", commit)
    tmp = Path(tempfile.mkdtemp())
    cache = tmp / "hub"
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{srv.server_address[1]}"
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download("acme/tiny-llama", cache_dir=str(cache), endpoint=os.environ["HF_ENDPOINT"])
        report["python_download"] = {"ok": True, "path": str(Path(path).relative_to(cache)), "commit": commit, "requests": log[:40]}
    except Exception:
        report["python_download"] = {"ok": False, "error": traceback.format_exc(), "requests": log[:40]}
    finally:
        srv.shutdown()
    with tarfile.open(out_tar, "w") as t:
        t.add(cache, arcname="hub")


def read_ts_cache(ts_cache: Path, report: dict) -> None:
    from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache

    r = {}
    try:
        r["snapshot"] = str(Path(snapshot_download("acme/tiny-llama", cache_dir=str(ts_cache), local_files_only=True)).relative_to(ts_cache))
        r["config"] = try_to_load_from_cache("acme/tiny-llama", "config.json", cache_dir=str(ts_cache)) is not None
        info = scan_cache_dir(ts_cache)
        r["scan"] = {
            "repos": [(x.repo_id, x.repo_type, x.nb_files, x.size_on_disk, sorted(x.refs.keys()) if hasattr(x, "refs") else None) for x in info.repos],
            "warnings": [str(w) for w in info.warnings],
        }
        for repo in info.repos:
            r["scan"]["revisions"] = [(rev.commit_hash, sorted(rev.refs), rev.nb_files) for rev in repo.revisions]
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            m = AutoModelForCausalLM.from_pretrained("acme/tiny-llama", cache_dir=str(ts_cache), local_files_only=True)
            tok = AutoTokenizer.from_pretrained("acme/tiny-llama", cache_dir=str(ts_cache), local_files_only=True)
            r["transformers"] = {"ok": True, "params": sum(p.numel() for p in m.parameters()), "vocab": len(tok)}
        except Exception:
            r["transformers"] = {"ok": False, "error": traceback.format_exc()[-2000:]}
    except Exception:
        r["error"] = traceback.format_exc()
    report["ts_cache"] = r


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ts_cache = Path(sys.argv[sys.argv.index("--ts-cache") + 1]) if "--ts-cache" in sys.argv else None
    report = {"torch": torch.__version__}
    # huggingface_hub reads its settings once, at import: none here is offline, Xet is off.
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    import huggingface_hub

    report["huggingface_hub"] = huggingface_hub.__version__
    pk = Path(tempfile.mkdtemp()) / "pickle"
    try:
        make_pickles(pk)
        with tarfile.open(out / "pickle.tar", "w") as t:
            t.add(pk, arcname="pickle")
    except Exception:
        report["pickles_error"] = traceback.format_exc()
    try:
        python_cache(out / "py-cache.tar", report)
    except Exception:
        report["py_cache_error"] = traceback.format_exc()
    if ts_cache is not None:
        try:
            read_ts_cache(ts_cache.resolve(), report)
        except Exception:
            report["ts_cache_error"] = traceback.format_exc()
    (out / "interop.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1)[:6000])


if __name__ == "__main__":
    main()
