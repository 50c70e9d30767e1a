"""The FastAPI app of `chatbot serve`: OpenAI's /v1/models and /v1/chat/completions (streamed as
server-sent events, or whole) over one local engine, each reply run by a `ChatSession` so
personas, soft prompts, the budget and storing work as in the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from chatbot.errors import NotFoundError, UsageError, UserError
from chatbot.serve.catalog import Catalog
from chatbot.serve.protocol import ChatRequest, Completion, error_body, finish_reason
from chatbot.serve.scheduler import QueueFull, Scheduler
from chatbot.serve.turns import ClientConversation, read_messages

CONVERSATION_HEADER = "X-Chatbot-Conversation"


@dataclass
class Job:
    """One request's reply, run on the engine thread; its events go to the request's queue."""

    request: ChatRequest
    conversation: ClientConversation
    persona: object
    store_as: int | str | None  # None: not stored; "new"; or a stored conversation's id
    emit: Callable[[tuple], None]
    cancel: threading.Event = field(default_factory=threading.Event)


def with_system(installed, system: str):
    """The persona with a client's system text after its control code (in the system turn where
    the persona has no code of its own)."""
    if not system:
        return installed
    persona = installed.persona
    code = f"{persona.control_code}\n\n{system}" if persona.control_code else system
    placement = persona.placement if persona.control_code else "system"
    return dataclasses.replace(installed, persona=persona.model_copy(update={"control_code": code, "placement": placement}))


def store_history(store, session, turns, model_name: str) -> None:
    """A new stored conversation that starts with the turns the client sent before its message."""
    session.conversation_id = store.new_conversation(None, model_name)
    leaf = None
    version = session._persona_version_id()
    for turn in turns:
        user_id, reply_id = store.add_turn(session.conversation_id, turn.user, leaf, version, {}, None, model_name)
        store.finish_reply(reply_id, turn.reply or "", "complete" if turn.reply else "interrupted", {})
        leaf = reply_id
    session.leaf_id = leaf


class Server:
    def __init__(self, runtime, settings, open_store: Callable[[], object], queue_size: int):
        self.runtime = runtime
        self.settings = settings
        self.open_store = open_store
        self.catalog = Catalog(runtime.model_name, settings.data_dir)
        self.scheduler = Scheduler(queue_size)

    def run(self, job: Job) -> None:
        """On the engine thread: one reply, start to end, its events emitted as they come."""
        from chatbot.session import ChatSession

        if job.cancel.is_set():  # the client went away while this waited
            return
        try:
            store = self.open_store() if job.store_as is not None else None
            stored_id = job.store_as if isinstance(job.store_as, int) else None
            session = ChatSession(self.runtime, self.settings, job.persona, store=store, conversation_id=stored_id)
            if stored_id is None:
                if store is not None and job.conversation.history:
                    store_history(store, session, job.conversation.history, self.runtime.model_name)
                session.history = list(job.conversation.history)
            params = self.sampling(session, job.request)
            reply = session.send(job.conversation.message, params, job.cancel)
            job.emit(("start", reply))
            for delta in reply:
                job.emit(("delta", delta))
            job.emit(("done", reply))
        except Exception as exc:  # every failure reaches the client, as an HTTP error or an SSE event
            job.emit(("error", exc))

    @staticmethod
    def sampling(session, request: ChatRequest):
        try:
            params = session.sampling_params(
                temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
                repetition_penalty=request.repetition_penalty, max_new_tokens=request.max_new_tokens,
                seed=request.seed,
            )
        except ValidationError as exc:
            raise UsageError(f"{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
        return params.model_copy(update={"stop": request.stops})


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        return JSONResponse(error_body(str(exc), code="model_not_found" if "model" in str(exc) else "not_found"), 404)
    if isinstance(exc, QueueFull):
        return JSONResponse(error_body(str(exc), "rate_limit_error", "queue_full"), 429)
    if isinstance(exc, UserError):
        moved = "moved on" in str(exc)
        return JSONResponse(error_body(str(exc), code="conversation_moved_on" if moved else None), 409 if moved else 400)
    return JSONResponse(error_body(f"{type(exc).__name__}: {exc}", "server_error"), 500)


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(runtime, settings, open_store: Callable[[], object], api_key: str | None = None,
               queue_size: int = 8) -> FastAPI:
    server = Server(runtime, settings, open_store, queue_size)
    app = FastAPI(title="chatbot serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.middleware("http")
    async def bearer_auth(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(error_body("a valid API key is needed (Authorization: Bearer KEY)",
                                               "authentication_error", "invalid_api_key"), 401)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(error_body(f"{where}: {first.get('msg')}" if where else str(first.get("msg"))), 400)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(m) for m in server.catalog.model_ids()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        try:
            installed = server.catalog.resolve(model_id)
        except UserError as exc:
            return error_response(exc)
        return _model_card(model_id if model_id == server.catalog.base else f"{server.catalog.base}:{installed.persona.name}")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        try:
            store_as = _store_as(body, request.headers.get(CONVERSATION_HEADER))
            conversation = read_messages(body.messages)
            persona = with_system(server.catalog.resolve(body.model), conversation.system)
        except UserError as exc:
            return error_response(exc)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(body, conversation, persona, store_as, lambda item: loop.call_soon_threadsafe(events.put_nowait, item))
        try:
            server.scheduler.submit(lambda: server.run(job))
        except QueueFull as exc:
            return error_response(exc)
        completion = Completion(body.model)
        try:
            kind, value = await events.get()  # "start" once the reply is stored and decoding
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        if kind == "error":
            return error_response(value)
        reply = value
        headers = {CONVERSATION_HEADER: str(reply.conversation_id)} if reply.conversation_id else {}
        if body.stream:
            return StreamingResponse(_stream(job, events, completion, body), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        try:
            while kind != "done":
                kind, value = await events.get()
                if kind == "error":
                    return error_response(value)
        finally:
            job.cancel.set()
        return JSONResponse(completion.whole(reply.text, reply.stats, finish_reason(reply.stats)), headers=headers)

    return app


async def _stream(job: Job, events: asyncio.Queue, completion: Completion, body: ChatRequest):
    """The reply as SSE chunks; a client that goes away cancels it (the engine stops within one
    token and the stored reply is marked interrupted)."""
    try:
        yield sse(completion.chunk({"role": "assistant", "content": ""}))
        while True:
            kind, value = await events.get()
            if kind == "delta":
                yield sse(completion.chunk({"content": value}))
            elif kind == "done":
                yield sse(completion.chunk({}, finish_reason(value.stats)))
                if body.stream_options is not None and body.stream_options.include_usage:
                    yield sse(completion.usage_chunk(value.stats))
                yield sse("[DONE]")
                return
            elif kind == "error":
                yield sse(error_body(str(value), "server_error"))
                return
    finally:
        job.cancel.set()


def _store_as(body: ChatRequest, header: str | None) -> int | str | None:
    if header:
        if header.strip().lower() == "new":
            return "new"
        if not header.strip().isdigit():
            raise UsageError(f"{CONVERSATION_HEADER}: give 'new' or a conversation id, not {header!r}")
        return int(header)
    if body.conversation_id is not None:
        return body.conversation_id
    return "new" if body.store else None


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatbot"}
