"""`chatbot serve`: an OpenAI-compatible HTTP server over the local engine (docs/scale-out.md).

protocol.py   the request and response bodies (OpenAI's chat completions, models, errors)
catalog.py    personas as models: `smollm2-135m:pirate`
turns.py      a client's messages -> the session's history and latest message
scheduler.py  one engine, requests in turn, a bounded queue (429 beyond it)
app.py        the FastAPI app: routes, auth, streaming (SSE)
"""
