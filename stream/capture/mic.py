"""Microphone capture: PortAudio (sounddevice) into an :class:`AudioRing` (docs/design.md 2-3).

Data path::

    PortAudio callback ─► staging ring ─► worker thread ─► AudioRing
    (copies only)         (F, C) float32   downmix, resample    (N,) float32 @16 kHz mono
                          @device rate     to 16 kHz, stamp

* The callback runs on PortAudio's thread: it copies ``indata`` (frames, C) float32 into a
  preallocated staging ring, notes the block's ADC time and counts ``input_overflow`` flags.
  No allocation beyond numpy views, no resampling, no lock held beyond ``Event.set``.
* The worker (the :class:`MicSource` thread) takes blocks in order, averages the channels to
  mono, resamples to 16 kHz with :class:`~stream.capture.resample.StreamingResampler`
  (torchaudio's sinc kernel, applied polyphase with the history carried across blocks: the
  output equals resampling the whole signal at once) and writes into the ring with the capture
  time of the first sample.

Time: ``time_info.inputBufferAdcTime`` is on the PortAudio clock; it is mapped once onto the
pipeline clock with ``offset = clock() - time_info.currentTime`` taken at the first callback.
Where a backend reports 0 for the ADC time, blocks are stamped by counting samples from the
first callback. ADC times jitter by ~0.1 ms, so a write is never stamped before the previous
one ended. (PortAudio's ALSA clock is the wall clock: a step of it after the first callback
shifts later stamps; the AudioRing measures that as ``clock_error_ns``.) Device frame indices
stay absolute: frames the staging ring had no room for are replaced by zeros, so sample index
and time stay linear.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frames import NS_PER_S
from stream.capture.base import SAMPLE_RATE, Clock, Sleep, SourceError, _SourceThread
from stream.capture.resample import StreamingResampler

MAX_CHANNELS = 2  # a device with more input channels is opened with its first two
_WAIT_S = 0.05  # longest wait for the callback, so stop() is seen within 50 ms
_CLOSE_TIMEOUT_S = 1.0  # longest wait for PortAudio to close the stream
_MIN_BLOCK = 16  # frames: smaller callbacks may find the staging metadata full (then dropped)


def _import_sounddevice() -> ModuleType:
    """sounddevice, or a :class:`SourceError` saying what to install."""
    try:
        import sounddevice
    except OSError as e:  # sounddevice raises OSError("PortAudio library not found")
        raise SourceError(
            f"no microphone support: {e} (install it: apt-get install libportaudio2), "
            "or run with --video FILE or --demo"
        ) from e
    except ImportError as e:
        raise SourceError(f"no microphone support: {e} (pip install sounddevice)") from e
    return sounddevice


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def input_devices(sd: ModuleType) -> list[dict[str, Any]]:
    """PortAudio's devices that have input channels, as ``sd.query_devices`` dicts."""
    return [dict(d) for d in sd.query_devices() if int(d["max_input_channels"]) > 0]


def _default_input_index(sd: ModuleType) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError, TypeError):  # no default input device
        return None


def _no_inputs() -> SourceError:
    return SourceError(
        "no audio input devices found (PortAudio sees none): connect a microphone, "
        "or run with --video FILE or --demo"
    )


def resolve_input_device(sd: ModuleType, device: int | str | None) -> dict[str, Any]:
    """The input device for ``device``: None or "default" (PortAudio's default input, else the
    first one), an index (int or digit string), or a case-insensitive substring of its name (an
    exact name wins). Raises :class:`SourceError` (one line listing the inputs) otherwise."""
    inputs = input_devices(sd)
    if not inputs:
        raise _no_inputs()
    listing = ", ".join(f"{d['index']}: {d['name']!r}" for d in inputs)
    hint = f"input devices: {listing} (run with --list-devices)"
    spec = device.strip() if isinstance(device, str) else device
    if spec is None or spec == "default":
        default = _default_input_index(sd)
        return next((d for d in inputs if d["index"] == default), inputs[0])
    if isinstance(spec, int) or spec.isdigit():
        found = [d for d in inputs if d["index"] == int(spec)]
        if not found:
            raise SourceError(f"audio device {spec} is not an input device; {hint}")
        return found[0]
    exact = [d for d in inputs if d["name"].lower() == spec.lower()]
    found = exact or [d for d in inputs if spec.lower() in d["name"].lower()]
    if not found:
        raise SourceError(f"no audio input device matches {spec!r}; {hint}")
    if len(found) > 1:
        names = ", ".join(f"{d['index']}: {d['name']!r}" for d in found)
        raise SourceError(f"audio device {spec!r} is ambiguous ({names}); pass an index instead")
    return found[0]


def list_audio_devices() -> str:
    """A table of PortAudio's input devices for ``--list-devices`` ('>' marks the default).

    Raises :class:`SourceError` when PortAudio is missing."""
    sd = _import_sounddevice()
    inputs = input_devices(sd)
    if not inputs:
        return f"  {_no_inputs()}"
    default = _default_input_index(sd)
    width = max(4, *(len(d["name"]) for d in inputs))
    lines = [f"    {'index':>5}  {'name':<{width}}  {'host API':<10}  channels  default rate"]
    for d in inputs:
        api = sd.query_hostapis(d["hostapi"])["name"]
        mark = ">" if d["index"] == default else " "
        lines.append(
            f"  {mark} {d['index']:>5}  {d['name']:<{width}}  {api:<10}  "
            f"{d['max_input_channels']:>8}  {d['default_samplerate']:.0f} Hz"
        )
    lines.append("  ('>' = default input; pass --mic NAME or --mic INDEX)")
    return "\n".join(lines)


class MicSource(_SourceThread):
    """Records a microphone into an :class:`AudioRing`: (N,) float32 mono @16 kHz.

    Each write carries the capture time of its first sample on ``clock`` (see the module
    docstring); the ring keeps the absolute sample index. ``start()`` opens and starts the
    PortAudio stream (raising :class:`SourceError` with one line), then the worker thread runs
    until ``stop()``; no audio for ``stall_timeout_s`` ends it with ``error`` set.

    Counters (``stats()``): ``audio_samples`` written @16 kHz, ``blocks`` (callbacks),
    ``overflows`` (callbacks flagged ``input_overflow``: PortAudio lost input),
    ``dropped_frames`` (device frames the staging ring had no room for; written as zeros),
    ``errors``.

    Args:
        device: "default" (PortAudio's default input), a device index (int or digit string),
            or a case-insensitive substring of the device name.
        audio: the ring, 16 kHz.
        samplerate: device rate (Hz); None: 16000 if the device supports it, else its default.
        blocksize: frames per callback; 0 lets PortAudio choose (sizes may vary), which is
            what PortAudio advises and what works with ALSA's pulse plugin.
        latency: PortAudio input latency: "low", "high" or seconds.
        staging_s: seconds of device audio the staging ring holds for the worker.
        stall_timeout_s: no callback for this long ends the thread with a SourceError.
        clock: the pipeline's clock, ns.
        sleep: unused by this source; kept for the common lifecycle.
    """

    def __init__(
        self,
        device: int | str | None,
        audio: AudioRing,
        samplerate: int | None = None,
        blocksize: int = 0,
        latency: float | str = "low",
        staging_s: float = 2.0,
        stall_timeout_s: float = 2.0,
        clock: Clock = time.monotonic_ns,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__("mic", clock, sleep)
        if audio.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the AudioRing must be {SAMPLE_RATE} Hz, got {audio.sample_rate}")
        self.device, self.audio_ring = device, audio
        self.requested_rate, self.blocksize, self.latency = samplerate, blocksize, latency
        self.staging_s, self.stall_timeout_s = staging_s, stall_timeout_s
        self.device_name = "" if device is None else str(device)
        self.device_rate, self.channels = 0, 0
        self.blocks = self.overflows = self.dropped_frames = 0
        self._stream: Any = None
        self._ready = threading.Event()
        self._prepare(channels=1, rate=SAMPLE_RATE)

    def stats(self) -> dict[str, int]:
        """Counters: audio samples, blocks, overflows, dropped frames, errors."""
        return {
            **super().stats(),
            "blocks": self.blocks,
            "overflows": self.overflows,
            "dropped_frames": self.dropped_frames,
        }

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        sd = _import_sounddevice()
        info = resolve_input_device(sd, self.device)
        name = f"{info['index']}: {info['name']!r}"
        channels = min(MAX_CHANNELS, int(info["max_input_channels"]))
        rate = self._choose_rate(sd, info["index"], channels, int(info["default_samplerate"]))
        self.device_name = str(info["name"])
        self._prepare(channels, rate)
        stream = None
        try:
            stream = sd.InputStream(
                device=info["index"],
                channels=channels,
                samplerate=rate,
                dtype="float32",
                blocksize=self.blocksize,
                latency=self.latency,
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            if stream is not None:
                stream.close(ignore_errors=True)
            raise SourceError(
                f"audio device {name} could not be opened ({channels} ch, {rate} Hz): "
                f"{_one_line(e)}"
            ) from e
        self._stream = stream

    def _choose_rate(self, sd: ModuleType, index: int, channels: int, default: int) -> int:
        """The requested rate (checked), else 16 kHz where supported, else the default rate."""
        rate = self.requested_rate or SAMPLE_RATE
        try:
            sd.check_input_settings(index, channels=channels, dtype="float32", samplerate=rate)
        except (sd.PortAudioError, ValueError) as e:
            if self.requested_rate:
                raise SourceError(
                    f"audio device {index} does not record at {rate} Hz ({_one_line(e)}); "
                    f"its default rate is {default} Hz"
                ) from e
            return default
        return rate

    def _prepare(self, channels: int, rate: int) -> None:
        """Preallocate the staging ring for ``channels`` at ``rate`` and reset the worker."""
        self.channels, self.device_rate = channels, rate
        frames = max(2 * self.blocksize, round(self.staging_s * rate), 1024)
        self._stage = np.zeros((frames, channels), np.float32)  # (F, C) float32 @device rate
        meta = frames // _MIN_BLOCK + 16  # blocks the staging ring can hold
        self._meta_start = np.zeros(meta, np.int64)  # absolute device frame of block[0]
        self._meta_frames = np.zeros(meta, np.int64)  # frames in the block
        self._meta_adc = np.zeros(meta, np.float64)  # inputBufferAdcTime, s, PortAudio clock
        # Written by the callback only:
        self._cb_frames = 0  # device frames seen (staged or dropped)
        self._staged_frames = self._staged_blocks = 0  # published to the worker
        self._first_cb_ns: int | None = None  # clock() at the first callback
        self._first_cb_pa_time = 0.0  # time_info.currentTime then, PortAudio clock
        self._first_cb_frames = 0  # frames in the first callback
        # Written by the worker only:
        self._taken_frames = self._taken_blocks = 0  # consumed from the staging ring
        self._next_frame = 0  # absolute device frame the resampler expects next
        self._anchor: tuple[int, int] | None = None  # (device frame, clock ns) of a block
        self._last_end_ns = 0  # clock time just past the last write
        self._resampler = StreamingResampler(rate, SAMPLE_RATE)

    # -- PortAudio's thread: copy only -----------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """indata: (frames, C) float32 @device rate, valid only during the call."""
        if status.input_overflow:
            self.overflows += 1
        if self._first_cb_ns is None:
            self._first_cb_ns, self._first_cb_pa_time = self._clock(), time_info.currentTime
            self._first_cb_frames = frames
        start = self._cb_frames
        self._cb_frames = start + frames
        self.blocks += 1
        cap, meta = self._stage.shape[0], self._meta_start.shape[0]
        if (
            self._staged_frames + frames - self._taken_frames > cap
            or self._staged_blocks - self._taken_blocks >= meta
        ):
            self.dropped_frames += frames  # the worker fell behind; it fills zeros
            return
        pos = self._staged_frames % cap
        first = min(frames, cap - pos)
        self._stage[pos : pos + first] = indata[:first]
        self._stage[: frames - first] = indata[first:]
        slot = self._staged_blocks % meta
        self._meta_start[slot], self._meta_frames[slot] = start, frames
        self._meta_adc[slot] = time_info.inputBufferAdcTime
        self._staged_frames += frames
        self._staged_blocks += 1  # publishes the block to the worker
        self._ready.set()

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        last_data_ns = self._clock()
        while not self.stopping:
            self._ready.wait(_WAIT_S)
            self._ready.clear()
            if self._drain():
                last_data_ns = self._clock()
            elif self._stream is not None and not self._stream.active:  # PortAudio gave up
                raise SourceError(
                    f"audio device {self.device_name!r} stopped: PortAudio ended the stream "
                    "(device unplugged or its server gone)"
                )
            elif self._clock() - last_data_ns > self.stall_timeout_s * NS_PER_S:
                raise SourceError(
                    f"audio device {self.device_name!r} stopped delivering audio "
                    f"(nothing for {self.stall_timeout_s:g} s)"
                )

    def _drain(self) -> int:
        """Process every published block; returns how many."""
        published, cap, meta = self._staged_blocks, self._stage.shape[0], self._meta_start.shape[0]
        done = 0
        while self._taken_blocks < published:
            slot = self._taken_blocks % meta
            start, n = int(self._meta_start[slot]), int(self._meta_frames[slot])
            adc = float(self._meta_adc[slot])
            pos = self._taken_frames % cap
            first = min(n, cap - pos)
            mono = np.empty(n, np.float32)  # (n,) float32 @device rate: channel average
            np.mean(self._stage[pos : pos + first], axis=1, out=mono[:first])
            np.mean(self._stage[: n - first], axis=1, out=mono[first:])
            self._taken_frames += n
            self._taken_blocks += 1  # frees the staging space
            if start > self._next_frame:  # frames dropped in staging: zeros keep time linear
                self._ingest(np.zeros(start - self._next_frame, np.float32), self._next_frame, 0.0)
            self._ingest(mono, start, adc)
            done += 1
        return done

    def _ingest(self, mono: np.ndarray, start: int, adc_s: float) -> None:
        """Stamp, resample and write (n,) mono device-rate samples starting at device frame
        ``start``; ``adc_s``: their PortAudio ADC time, 0 when unknown."""
        rate = self.device_rate
        assert self._first_cb_ns is not None, "blocks come from callbacks"
        if adc_s > 0.0 and self._first_cb_pa_time > 0.0:
            offset_ns = self._first_cb_ns - round(self._first_cb_pa_time * NS_PER_S)
            self._anchor = (start, round(adc_s * NS_PER_S) + offset_ns)
        elif self._anchor is None:  # count samples: the first block ended at its callback
            self._anchor = (0, self._first_cb_ns - self._first_cb_frames * NS_PER_S // rate)
        self._next_frame = start + int(mono.shape[0])
        out_start = self._resampler.out_samples
        out = self._resampler.process(mono)  # (m,) float32 @16 kHz
        if out.shape[0] == 0:
            return
        anchor_frame, anchor_ns = self._anchor
        pos = self._resampler.input_position(out_start)  # device frame of out[0]
        t_ns = anchor_ns + round((pos - anchor_frame) * NS_PER_S / rate)
        # ADC times jitter by ~0.1 ms: a write never starts before the previous one ended.
        t_ns = max(t_ns, self._last_end_ns)
        self._last_end_ns = t_ns + int(out.shape[0]) * NS_PER_S // SAMPLE_RATE
        self.audio_ring.write(out, t_ns)
        self.audio_samples += int(out.shape[0])

    def _close(self) -> None:
        """Abort and close the stream, waiting at most ``_CLOSE_TIMEOUT_S``: PortAudio can hang
        closing a device that has gone away; the source still ends (counted in ``errors``)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        failed: list[BaseException] = []

        def close() -> None:
            try:
                stream.abort(ignore_errors=False)
                stream.close(ignore_errors=False)
            except Exception as e:  # closing a failed device
                failed.append(e)
                stream.close(ignore_errors=True)

        closer = threading.Thread(target=close, name="mic-close", daemon=True)
        closer.start()
        closer.join(_CLOSE_TIMEOUT_S)
        if failed or closer.is_alive():
            self.errors += 1
