"""A real microphone for tests: a private PulseAudio daemon whose null sink is played into.

PortAudio (sounddevice) reaches PulseAudio through ALSA's pulse plugin (libasound2-plugins):
the ALSA devices "pulse" and "default" record the daemon's default source, here the monitor of
the null sink ``pcmanet_test``. A wav played into the sink with ``paplay`` is what the
"microphone" hears.

Recipe (works as root and as a user; never touches a daemon that is already running):

* ``HOME``, ``XDG_RUNTIME_DIR`` and ``PULSE_RUNTIME_PATH`` point into a temporary directory;
* ``pulseaudio --daemonize=no -n --exit-idle-time=-1 --use-pid-file=no --disallow-exit
  --realtime=no --high-priority=no --disable-shm=yes
  --load="module-native-protocol-unix socket=DIR/native auth-anonymous=1"
  --load="module-null-sink sink_name=pcmanet_test rate=48000 channels=2"``
  (``-n``: no default.pa, so no udev/ALSA/D-Bus modules; as root pulseaudio only warns);
* the test process sets ``PULSE_SERVER=unix:DIR/native`` (and ``PULSE_RUNTIME_PATH``,
  ``PULSE_COOKIE`` inside DIR, so libpulse leaves ~/.config and /tmp alone) and
  re-initialises PortAudio;
* a low-latency stream of silence (``pacat --latency-msec=20 /dev/zero``) plays into the sink
  all the time: an idle null sink runs at 2 s latency and its monitor then delivers audio in
  2 s bursts (PortAudio callbacks stall for ~2 s); a live microphone never idles like that.

Every external command runs with a timeout; :meth:`PulseAudioEnv.close` ends what it started.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

SINK = "pcmanet_test"
MONITOR = f"{SINK}.monitor"
SINK_RATE = 48_000  # Hz, stereo s16


class PulseUnavailable(RuntimeError):
    """PulseAudio could not be started here; the message says what failed (for pytest.skip)."""


def write_wav(path: Path, samples: np.ndarray, rate: int = SINK_RATE) -> Path:
    """Write (S,) float mono in [-1, 1] as 16-bit stereo PCM."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")  # (S,) int16
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], 2, axis=1).tobytes())  # (S, 2) interleaved
    return path


def reinit_portaudio(timeout_s: float = 5.0) -> None:
    """Make an imported sounddevice enumerate devices again (after PULSE_SERVER changed).

    Bounded: Pa_Terminate closes streams still open, which can hang on a device that has gone
    away; then PortAudio is left as it is (the caller's tests fail rather than hang)."""
    sd = sys.modules.get("sounddevice")
    if sd is None:
        return

    def reinit() -> None:
        sd._terminate()
        sd._initialize()

    worker = threading.Thread(target=reinit, name="portaudio-reinit", daemon=True)
    worker.start()
    worker.join(timeout_s)


class PulseAudioEnv:
    """A private PulseAudio daemon with the null sink :data:`SINK`; see the module docstring."""

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="pcmanet-pulse-"))
        self.socket = self.dir / "native"
        self.server = f"unix:{self.socket}"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._players: list[subprocess.Popen[bytes]] = []
        client = self.dir / "client"  # libpulse client state: kept out of ~/.config and /tmp
        self.client_env = {
            "PULSE_SERVER": self.server,
            "PULSE_RUNTIME_PATH": str(client),
            "PULSE_COOKIE": str(client / "cookie"),
        }
        self._saved_env: dict[str, str | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PulseAudioEnv:
        """Start the daemon, the null sink and the silence stream; raises PulseUnavailable."""
        tools = ("pulseaudio", "pactl", "paplay", "pacat", "parec")
        missing = [c for c in tools if not shutil.which(c)]
        if missing:
            raise PulseUnavailable(
                f"{', '.join(missing)} not found (apt-get install pulseaudio pulseaudio-utils)"
            )
        run_dir, home = self.dir / "run", self.dir / "home"
        for d in (run_dir, home, self.dir / "client"):
            d.mkdir(mode=0o700)
        env = {key: v for key, v in os.environ.items() if key not in self.client_env}
        env.update(
            HOME=str(home), XDG_RUNTIME_DIR=str(run_dir), PULSE_RUNTIME_PATH=str(run_dir / "pulse")
        )
        cmd = [
            "pulseaudio",
            "--daemonize=no",
            "-n",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disallow-exit",
            "--realtime=no",
            "--high-priority=no",
            "--disable-shm=yes",  # plain socket transfers: no memfd/shm quirks in containers
            "--log-target=stderr",
            "--log-level=warning",
            f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK} rate={SINK_RATE} channels=2",
        ]
        log = self.dir / "pulseaudio.log"
        with open(log, "wb") as err:
            self._daemon = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._daemon.poll() is not None:
                raise PulseUnavailable(
                    f"{' '.join(cmd[:2])} ... exited with {self._daemon.returncode}: {_tail(log)}"
                )
            if self.pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise PulseUnavailable(
                    f"pulseaudio did not answer within {self.start_timeout_s:g} s: {_tail(log)}"
                )
            time.sleep(0.1)
        self.pactl("set-default-source", MONITOR)
        self._players.append(
            self._spawn(
                [
                    "pacat",
                    "--playback",
                    "--raw",
                    "--format=s16le",
                    f"--rate={SINK_RATE}",
                    "--channels=2",
                    "--latency-msec=20",
                    f"--device={SINK}",
                    "/dev/zero",
                ]
            )
        )
        deadline = time.monotonic() + self.start_timeout_s
        while "RUNNING" not in self.pactl("list", "short", "sinks", check=False).stdout:
            if time.monotonic() > deadline:  # the silence stream never reached the sink
                raise PulseUnavailable(
                    f"null sink {SINK} not RUNNING after pacat started: "
                    f"{self.pactl('list', 'short', 'sinks', check=False).stdout.strip()}"
                )
            time.sleep(0.05)
        self._wait_for_monitor_audio()
        self._saved_env = {key: os.environ.get(key) for key in self.client_env}
        os.environ.update(self.client_env)  # this process: PortAudio -> ALSA -> libpulse
        reinit_portaudio()
        return self

    def close(self) -> None:
        """Stop the players and the daemon (bounded waits), restore the PULSE_* variables."""
        for proc in self._players:
            _end(proc)
        self._players.clear()
        if self._daemon is not None:
            _end(self._daemon, timeout_s=5.0)
            self._daemon = None
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = None
            reinit_portaudio()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- use -------------------------------------------------------------------------------
    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pactl --server=... ARGS`` (3 s timeout)."""
        try:
            out = subprocess.run(
                ["pactl", f"--server={self.server}", *args],
                capture_output=True,
                text=True,
                timeout=3.0,
                env={**os.environ, **self.client_env},
            )
        except subprocess.TimeoutExpired as e:
            out = subprocess.CompletedProcess(e.cmd, 124, "", "timed out")
        if check and out.returncode != 0:
            raise PulseUnavailable(f"pactl {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Start playing ``wav`` into the null sink; ended by :meth:`stop_player` or close."""
        proc = self._spawn(["paplay", f"--device={SINK}", "--latency-msec=20", str(wav)])
        self._players.append(proc)
        return proc

    def kill_daemon(self) -> None:
        """Kill the daemon now (a microphone whose server goes away); close() still cleans up."""
        if self._daemon is not None:
            self._daemon.kill()
            self._daemon.wait(5.0)

    def stop_player(self, proc: subprocess.Popen[bytes]) -> None:
        _end(proc)
        if proc in self._players:
            self._players.remove(proc)

    def _wait_for_monitor_audio(self) -> None:
        """Record the monitor with parec until 0.1 s of audio has come: a fresh null sink
        finishes its first 2 s render cycle before it follows the silence stream's 20 ms, and
        a capture opened meanwhile would get nothing for up to 2 s."""
        rec = self._spawn(
            [
                "parec",
                "--raw",
                "--format=s16le",
                f"--rate={SINK_RATE}",
                "--channels=2",
                "--latency-msec=20",
                f"--device={MONITOR}",
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert rec.stdout is not None
            want, got = SINK_RATE // 10 * 4, 0  # 0.1 s of s16 stereo
            deadline = time.monotonic() + self.start_timeout_s
            while got < want:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([rec.stdout], [], [], left)[0]:
                    raise PulseUnavailable(
                        f"no audio from {MONITOR} within {self.start_timeout_s:g} s (parec)"
                    )
                chunk = os.read(rec.stdout.fileno(), 65536)
                if not chunk:
                    raise PulseUnavailable(f"parec from {MONITOR} ended: exit {rec.wait(2)}")
                got += len(chunk)
        finally:
            _end(rec)
            if rec.stdout is not None:
                rec.stdout.close()

    def _spawn(self, cmd: list[str], stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.client_env},
            start_new_session=True,
        )


def _end(proc: subprocess.Popen[bytes], timeout_s: float = 2.0) -> None:
    """Terminate a process this module started; kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def _tail(path: Path, chars: int = 400) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return " | ".join(text[-chars:].splitlines()) or "(no output)"
