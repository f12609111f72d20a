"""The gateway's protocol logic without I/O (no sockets, no asyncio): bytes and events
in, values out. `http`: HTTP/1.1 framing (httptools/llhttp); `answer`: one daemon
answer relayed as the client gets it; `exchange`: one request's audit record and the
errors that end it. The modules beside this package do the I/O that drives them."""
