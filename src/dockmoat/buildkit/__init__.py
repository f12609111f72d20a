"""BuildKit through the guard: the HTTP/2 and gRPC layer of upgraded `/grpc` and `/session`.

`wire` reads protobuf's wire format, `messages` the few BuildKit messages and fields
the guard decides on (field numbers from BuildKit's own .proto files), `grpc` frames
gRPC messages and speaks its errors, `services` lists every call the guard knows,
`relay` is the sans-IO HTTP/2 relay (two h2 connections per upgraded stream) and
`decide` joins them to the policy and tenancy. Socket I/O is in
`dockmoat.gateway.tunnel` only.
"""
