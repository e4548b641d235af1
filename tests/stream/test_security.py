"""Security rules checked on the source itself: no shell, no unpickling outside the one opt-in
AVSBench path, loopback by default. (The recorder's files after SIGTERM and SIGINT:
test_run_live.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

from stream.run.config import LiveConfig
from stream.transport.sockets import DEFAULT_URL, exposure_warning
from tests.conftest import REPO

PACKAGES = ("pcmanet", "stream", "calib")


def calls(names: tuple[str, ...]) -> list[tuple[Path, ast.Call]]:
    """Every call in the packages' sources whose dotted callee ends with one of ``names``."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(names):
                    out.append((path.relative_to(REPO), node))
    return out


def test_no_shell_commands() -> None:
    shell = [(p, n.lineno) for p, n in calls(("subprocess.run", "subprocess.Popen",
                                              "subprocess.call", "subprocess.check_output"))
             if any(k.arg == "shell" for k in n.keywords)]
    assert not shell, shell
    assert not calls(("os.system", "os.popen")), "a shell command in library code"


def test_torch_load_is_always_weights_only() -> None:
    """Except one call: the step builder's input, a pickle the live process wrote into its
    private cache a moment before (stream/engine/aot.py says why that folder is trusted)."""
    loads = calls(("torch.load",))
    assert loads
    trusted = set()
    for path, node in loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kw, f"{path}:{node.lineno}"
        if ast.literal_eval(kw["weights_only"]) is not True:
            trusted.add(str(path))
    assert trusted == {"stream/engine/aot.py"}, trusted
    doc = (REPO / "stream/engine/aot.py").read_text()
    assert "trusted code" in doc and "0700" in doc


def test_pickle_is_read_only_by_the_opt_in_avsbench_path() -> None:
    where = {str(p) for p, _ in calls(("pickle.load", "pickle.loads", "Unpickler"))}
    assert where == {"pcmanet/data/media.py"}, where
    doc = (REPO / "pcmanet/data/media.py").read_text()
    assert "arbitrary code" in doc and "trusted" in doc


def test_publisher_binds_loopback_by_default() -> None:
    assert DEFAULT_URL.startswith("tcp://127.0.0.1:") and exposure_warning(DEFAULT_URL) is None
    assert LiveConfig().publish.zmq == DEFAULT_URL
