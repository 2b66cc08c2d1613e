"""Run `phoenix serve` (arize-phoenix 20.x) with every listener on 127.0.0.1.

Run with the Phoenix venv's interpreter (scripts/setup_phoenix.sh builds it):
    PHOENIX_WORKING_DIR=/tmp/x PHOENIX_PORT=16006 .tools/phoenix-venv/bin/python \
        scripts/run_phoenix_loopback.py

Why a wrapper: PHOENIX_HOST only moves the HTTP server (UI, REST, OTLP/HTTP); Phoenix's
OTLP gRPC collector binds ``[::]:PHOENIX_GRPC_PORT`` (every interface) no matter what, and
the only built-in switch that turns it off (--read-only) also blocks writes. This wrapper
forces the HTTP host to 127.0.0.1 and either does not start gRPC at all (the default here:
the pipeline and its tests only speak HTTP) or, with EVAL_PHOENIX_GRPC=1, rebinds it to
127.0.0.1. Then it hands over to Phoenix's own CLI entry point.
"""

import os
import sys

os.environ["PHOENIX_HOST"] = "127.0.0.1"


def _loopback(address: str) -> str:
    return "127.0.0.1:" + address.rsplit(":", 1)[1]


def _patch_grpc() -> None:
    import grpc.aio._server as aio_server

    insecure = aio_server.Server.add_insecure_port
    secure = aio_server.Server.add_secure_port

    def add_insecure_port(self, address):
        return insecure(self, _loopback(address))

    def add_secure_port(self, address, credentials):
        return secure(self, _loopback(address), credentials)

    aio_server.Server.add_insecure_port = add_insecure_port
    aio_server.Server.add_secure_port = add_secure_port

    if os.environ.get("EVAL_PHOENIX_GRPC") != "1":
        import phoenix.server.grpc_server as grpc_server

        init = grpc_server.GrpcServer.__init__

        def no_grpc_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self._disabled = True  # GrpcServer's own "do not start" flag (read-only mode)

        grpc_server.GrpcServer.__init__ = no_grpc_init


def main() -> None:
    _patch_grpc()
    from phoenix.server.main import main as phoenix_main

    sys.argv = ["phoenix", "serve", *sys.argv[1:]]
    phoenix_main()


if __name__ == "__main__":
    main()
