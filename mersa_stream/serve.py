"""`mersa serve`: the live emotion stream over WebSocket, and a live page in the browser.

One asyncio server (the `websockets` library) on one port:
  ws://HOST:PORT/v1/listen  a session: binary audio in, one JSON text message per result out
  GET /                     the live page (mersa_stream/web/index.html: microphone -> session)
  GET /healthz              {"status": "ok", ...}
Each session is a `Stream` (stream.py: the very listener of `mersa listen`); all of them share
one loaded recognizer through `SharedBatcher` (batching.py), which recognises the utterances of
different sessions together. The protocol, its limits and close codes: docs/serve.md.

Nothing a session does waits on another: results come from the recognition threads into the
session's own outbox (`call_soon_threadsafe`), and only that session's sender task waits on its
client's socket. A client that stops reading is closed once `max_unsent_messages` pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import typer
from websockets.exceptions import ConnectionClosed

from .batching import SharedBatcher
from .cli import MODEL_FLAGS, ConfigFlags, Flag, stderr, with_config_flags
from .config import Config
from .errors import ConfigError
from .listen import LiveResult, RecognizerLike
from .stream import Stream

LISTEN_PATH = "/v1/listen"
ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
TOKEN_ENV = "MERSA_TOKEN"
# close codes (RFC 6455, 7.4.1)
NORMAL, GOING_AWAY, INVALID_DATA, POLICY, TOO_BIG, INTERNAL, TRY_LATER = \
    1000, 1001, 1007, 1008, 1009, 1011, 1013
# a float sample beyond this is not audio (a wrong encoding): within [-1, 1] plus overshoot
MAX_FLOAT_SAMPLE = 2.0
# how an encoded file sent instead of raw samples begins (offset, bytes, what it is)
CONTAINERS = ((0, b"RIFF", "a WAV file"), (0, b"fLaC", "a FLAC file"), (0, b"OggS", "an Ogg file"),
              (0, b"ID3", "an MP3 file"), (0, b"\x1aE\xdf\xa3", "a WebM/Matroska file"),
              (4, b"ftyp", "an MP4/M4A file"))
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


# -------------------------------------------------------------------------- start-up checks


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every interface)
        return False


def serve_token(config: Config) -> str:
    """serve.token (--token), else the MERSA_TOKEN environment variable, else none."""
    return config.serve.token or os.environ.get(TOKEN_ENV, "")


def check_bind(host: str, token: str) -> None:
    if not token and not is_loopback(host):
        raise ConfigError(f"serve.host {host!r} is not a loopback address: refusing to serve it "
                          f"without a token (--token or {TOKEN_ENV})")


# -------------------------------------------------------------------------- protocol pieces


@dataclass(frozen=True)
class StreamParams:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"


def parse_params(query: str) -> StreamParams:
    """The session's query (`sample_rate`, `encoding`); ValueError says what is wrong."""
    values = {k: v[-1] for k, v in parse_qs(query).items()}
    encoding = values.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    text = values.get("sample_rate", "16000")
    if not text.isdigit() or not 8000 <= int(text) <= 192000:
        raise ValueError(f"sample_rate {text!r}: expected an integer from 8000 to 192000")
    return StreamParams(int(text), encoding)


def request_token(request) -> str:
    """The token a request carries: `Authorization: Bearer TOKEN`, else `?token=TOKEN`."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return parse_qs(urlsplit(request.path).query).get("token", [""])[-1]


class BadAudio(ValueError):
    pass


class AudioDecoder:
    """Binary messages -> samples. A sample split between two messages is joined again."""

    def __init__(self, encoding: str):
        self.dtype = ENCODINGS[encoding]
        self.encoding = encoding
        self._carry = b""
        self._first = True

    def decode(self, data: bytes) -> np.ndarray:
        if self._first and data:
            self._first = False
            for offset, magic, what in CONTAINERS:
                if data[offset:offset + len(magic)] == magic:
                    raise BadAudio(f"the audio looks like {what}: send raw {self.encoding} "
                                   "samples, not an encoded file")
        data = self._carry + data
        whole = len(data) // self.dtype.itemsize * self.dtype.itemsize
        self._carry = data[whole:]
        samples = np.frombuffer(data[:whole], self.dtype)
        if self.dtype.kind == "f" and len(samples):
            if not np.isfinite(samples).all():
                raise BadAudio("f32le samples must be finite (NaN or infinity received): "
                               "wrong encoding?")
            peak = float(np.abs(samples).max())
            if peak > MAX_FLOAT_SAMPLE:
                raise BadAudio(f"f32le samples must lie within [-1, 1] (got {peak:.3g}): "
                               "wrong encoding?")
        return samples


class Refused(Exception):
    """End a session: an error message to the client, then the close code and reason."""

    def __init__(self, code: int, reason: str, message: str | None = None):
        super().__init__(reason)
        self.code, self.reason, self.message = code, reason, message or reason


def utterance_message(result: LiveResult) -> tuple[str, bool]:
    """The JSON text of a result (the listen record, typed), and whether it is final."""
    record = result.to_record()
    record.setdefault("final", True)  # listeners without interim results: every record is final
    return json.dumps({"type": "utterance", **record}, ensure_ascii=False), bool(record["final"])


def error_message(text: str) -> str:
    return json.dumps({"type": "error", "message": text}, ensure_ascii=False)


# ------------------------------------------------------------------------------ the session


class Session:
    def __init__(self, server: Server, ws, params: StreamParams, name: str):
        self.server, self.ws, self.params, self.name = server, ws, params, name
        self.limits = server.config.serve
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.finals = 0
        self.recognizer = server.batcher.session()
        self.decoder = AudioDecoder(params.encoding)
        self.stream = Stream(self.recognizer, server.config, name=name,
                             sample_rate=params.sample_rate, on_result=self._from_thread)
        self._closing: asyncio.Task | None = None

    # results: recognition thread -> loop -> outbox -> sender task
    def _from_thread(self, result: LiveResult) -> None:
        self.loop.call_soon_threadsafe(self._deliver, result)

    def _deliver(self, result: LiveResult) -> None:
        text, final = utterance_message(result)
        self.finals += final
        if self.outbox.qsize() >= self.limits.max_unsent_messages:
            if self._closing is None:  # not reading: its socket is full, close it
                self._closing = asyncio.ensure_future(self.ws.close(
                    POLICY, f"client not reading: {self.outbox.qsize()} results unsent"))
            return
        self.outbox.put_nowait(text)

    async def _send_all(self) -> None:
        while (text := await self.outbox.get()) is not None:
            try:
                await self.ws.send(text)
            except ConnectionClosed:
                return

    # audio and control: client -> stream
    async def _next_message(self) -> str | bytes | None:
        """The next message; None when the server is shutting down (Refused when idle)."""
        receiving = asyncio.ensure_future(self.ws.recv())
        await asyncio.wait({receiving, self.server.draining}, timeout=self.limits.idle_timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        if receiving.done():
            return receiving.result()
        receiving.cancel()  # safe: websockets loses no data on a cancelled recv()
        if self.server.draining.done():
            return None
        raise Refused(POLICY, f"idle for {self.limits.idle_timeout_s:g} s")

    async def _receive_until_end(self) -> bool:
        """Feed the stream until the client's end (True) or the server's shutdown (False)."""
        limits = self.limits
        while True:
            message = await self._next_message()
            if message is None:
                return False
            if len(message) > limits.max_message_bytes:
                raise Refused(TOO_BIG, "message too big",
                              f"message of {len(message)} bytes: the limit is "
                              f"{limits.max_message_bytes} (serve.max_message_bytes)")
            if isinstance(message, str):
                if self._control(message) == "end":
                    return True
                continue
            try:
                samples = self.decoder.decode(message)
            except BadAudio as exc:
                raise Refused(INVALID_DATA, "invalid audio", str(exc)) from None
            # what earlier messages left waiting (recognition listen.queue_size utterances behind)
            if self.stream.backlog_seconds > limits.max_queued_audio_s:
                raise Refused(POLICY, "too much audio queued",
                              f"more than {limits.max_queued_audio_s:g} s of audio waiting "
                              "(serve.max_queued_audio_s): send audio in real time")
            self.stream.push(samples)  # results come through on_result

    def _control(self, text: str) -> str:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            raise Refused(POLICY, "bad message",
                          'text messages are JSON objects: {"type": "end"} or '
                          '{"type": "keepalive"}') from None
        if kind not in ("end", "keepalive"):
            raise Refused(POLICY, "bad message", f"unknown message type {kind!r}: expected "
                          '"end" or "keepalive"')
        return kind

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_all())
        close: tuple[int, str] | None = None
        finished = False
        try:
            ended = await self._receive_until_end()
            # the end, or a shutdown: like `listen` stopped, the utterance in flight is finished
            await self.loop.run_in_executor(self.server.executor, self.stream.flush)
            finished = True
            self.outbox.put_nowait(json.dumps({"type": "done", "utterances": self.finals}))
            close = (NORMAL, "done") if ended else (GOING_AWAY, "server shutting down")
        except Refused as exc:
            self.outbox.put_nowait(error_message(exc.message))
            close = (exc.code, exc.reason)
        except ConnectionClosed:
            pass  # the client went away (or was closed for not reading)
        except Exception as exc:  # noqa: BLE001 - a recognition error ends this session only
            self.outbox.put_nowait(error_message(f"internal error ({type(exc).__name__}: {exc})"))
            close = (INTERNAL, "internal error")
        finally:
            if not finished:  # nothing more of this session is recognised
                self.recognizer.cancel()
                await self.loop.run_in_executor(self.server.executor, self.stream.close)
            self.outbox.put_nowait(None)
        if close is not None:
            # what is queued goes out first, unless the client does not read
            await asyncio.wait([sender], timeout=5.0)
            await self.ws.close(*close)
        sender.cancel()
        if self._closing is not None:
            await self._closing


# ------------------------------------------------------------------------------- the server


def _page() -> bytes:
    return resources.files("mersa_stream").joinpath("web/index.html").read_bytes()


class Server:
    """The WebSocket handler and the HTTP answers (`process_request`) of one `mersa serve`."""

    def __init__(self, config: Config, recognizer: RecognizerLike, token: str = ""):
        self.config = config
        self.recognizer = recognizer
        self.token = token
        self.batcher = SharedBatcher(recognizer, config.serve.batch_size)
        limit = config.serve.max_sessions
        # flushes and clean-ups wait on recognition: a thread each, never the default pool's
        self.executor = ThreadPoolExecutor(limit + 2, thread_name_prefix="mersa-session")
        self.sessions = 0
        self.opened = 0
        self.page = _page()
        self.draining: asyncio.Future | None = None  # serve_until's: done when shutting down

    # -- HTTP, before any upgrade
    def process_request(self, connection, request):
        url = urlsplit(request.path)
        if url.path == LISTEN_PATH:
            return self._check_session_request(connection, request, url.query)
        if url.path in ("/", "/index.html"):
            return _response(connection, HTTPStatus.OK, self.page, "text/html; charset=utf-8",
                             {"Content-Security-Policy": PAGE_CSP})
        if url.path == "/healthz":
            health = {"status": "ok", "sessions": self.sessions,
                      "max_sessions": self.config.serve.max_sessions,
                      "models": "ready" if getattr(self.recognizer, "ready", True) else "loading",
                      "batches": self.batcher.stats.batches,
                      "batched_utterances": self.batcher.stats.utterances}
            return _response(connection, HTTPStatus.OK, json.dumps(health).encode(),
                             "application/json")
        return connection.respond(HTTPStatus.NOT_FOUND, f"not found: {url.path}\n")

    def _check_session_request(self, connection, request, query: str):
        if self.draining is not None and self.draining.done():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        if self.token and not hmac.compare_digest(request_token(request).encode(),
                                                  self.token.encode()):
            response = connection.respond(HTTPStatus.UNAUTHORIZED,
                                          "missing or wrong token (Authorization: Bearer TOKEN "
                                          "or ?token=TOKEN)\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        origin = request.headers.get("Origin")
        # a web page elsewhere must not drive the server from its visitors' browsers
        if origin is not None and not self._origin_allowed(origin, request.headers.get("Host")):
            return connection.respond(HTTPStatus.FORBIDDEN,
                                      f"origin {origin} not allowed (serve.origins)\n")
        try:
            parse_params(query)
        except ValueError as exc:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        return None  # go on with the upgrade

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        allowed = {o.strip().rstrip("/") for o in self.config.serve.origins.split(",")}
        return "*" in allowed or origin in allowed or \
            (host is not None and origin in (f"http://{host}", f"https://{host}"))

    # -- WebSocket sessions
    async def handler(self, ws) -> None:
        params = parse_params(urlsplit(ws.request.path).query)
        limit = self.config.serve.max_sessions
        if self.sessions >= limit:
            reason = f"server busy: {limit} sessions (serve.max_sessions)"
            with contextlib.suppress(ConnectionClosed):
                await ws.send(error_message(reason))
            await ws.close(TRY_LATER, reason)
            return
        self.sessions += 1
        self.opened += 1
        try:
            session = Session(self, ws, params, f"ws:{self.opened}")
            await session.run()
        finally:
            self.sessions -= 1

    def close(self) -> None:
        self.batcher.close()
        self.executor.shutdown(wait=False)


def _response(connection, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None):
    response = connection.respond(status, "")
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.body = body
    return response


async def serve_until(server: Server, host: str, port: int, stop: asyncio.Event,
                      on_ready: Callable[[int], None]) -> None:
    """Serve until `stop` is set; `on_ready(port)` once bound. At the stop, open sessions get
    the records of their last utterance and `done`, then close 1001 (going away); those not done
    within `serve.drain_timeout_s` are closed 1001 as they are."""
    import logging

    from websockets.asyncio.server import serve

    logger = logging.getLogger("mersa.serve.websockets")
    logger.addHandler(logging.NullHandler())  # handshake noise from bad clients: not ours to print
    logger.propagate = False
    limit = server.config.serve.max_message_bytes
    try:
        ws_server = await serve(server.handler, host, port, process_request=server.process_request,
                                # up to twice the limit is read, to answer it with a message;
                                # beyond, the connection is closed (1009) without reading it
                                max_size=2 * limit, max_queue=4, logger=logger,
                                server_header="mersa-serve")
    except OSError as exc:
        raise ConfigError(f"serve.host/serve.port {host}:{port}: cannot bind "
                          f"({exc.strerror or exc})") from None
    server.draining = asyncio.get_running_loop().create_future()
    async with ws_server:
        on_ready(ws_server.sockets[0].getsockname()[1])
        await stop.wait()
        # no new sessions (503); the open ones finish their utterance in flight, say done and
        # close (1001); then the library closes what is left (1001)
        server.draining.set_result(None)
        deadline = time.monotonic() + server.config.serve.drain_timeout_s
        while server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class ServerThread:
    """A server in a thread of its own (tests, benchmarks, embedding): start(), url, stop()."""

    def __init__(self, config: Config, recognizer: RecognizerLike, token: str = "",
                 host: str | None = None, port: int | None = None):
        self.server = Server(config, recognizer, token)
        self.host = host or config.serve.host
        self.port = config.serve.port if port is None else port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mersa-serve", daemon=True)

    def _run(self) -> None:
        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await serve_until(self.server, self.host, self.port, self._stop, self._bound)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - raised from start()
            self._error = exc
        finally:
            self._ready.set()

    def _bound(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{LISTEN_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        """Stop serving (as SIGTERM stops `mersa serve`); once stopped, nothing more to do."""
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self.server.close()


# ------------------------------------------------------------------------------ the command

SERVE_FLAGS = (
    Flag(("--host",), "serve.host", "Address to bind (any but loopback needs a token)."),
    Flag(("--port", "-p"), "serve.port", "TCP port (0: any free port)."),
    Flag(("--token",), "serve.token",
         f"Clients must send this token (default: the {TOKEN_ENV} environment variable)."),
)


@with_config_flags(*MODEL_FLAGS, *SERVE_FLAGS)
def serve(flags: ConfigFlags):
    """Serve the live stream over WebSocket (ws://HOST:PORT/v1/listen) and a live page (/)."""
    from .recognizer import RecognizerLoader, resolve_models

    cfg = flags.load()
    token = serve_token(cfg)
    check_bind(cfg.serve.host, token)
    # every model found now (a missing one stops here); loaded once the port is ours
    recognizer = RecognizerLoader(cfg, resolve_models(cfg))
    server = Server(cfg, recognizer, token)
    host = cfg.serve.host

    def announce(port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        stderr.print(f"mersa: serving ws://{shown}:{port}{LISTEN_PATH} and the live page "
                     f"http://{shown}:{port}/ ({'token required' if token else 'no token'}); "
                     "Ctrl-C to stop", markup=False, highlight=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        failed: list[BaseException] = []

        def loaded(future) -> None:
            if not future.cancelled() and future.exception() is not None:
                failed.append(future.exception())  # a model that cannot load ends the server
                stop.set()

        def ready(port: int) -> None:
            announce(port)
            # sessions may begin meanwhile: their first recognition waits for the models
            loop.run_in_executor(None, recognizer.get).add_done_callback(loaded)

        await serve_until(server, host, cfg.serve.port, stop, ready)
        if failed:
            raise failed[0]

    try:
        asyncio.run(main())
    finally:
        server.close()


def register(app: typer.Typer) -> None:
    app.command()(serve)
