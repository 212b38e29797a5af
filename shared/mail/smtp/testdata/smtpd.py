"""A real SMTP server for the smtp adapter's tests, built on aiosmtpd.

It listens on 127.0.0.1 (port 0: the system picks one), prints
"listening 127.0.0.1:PORT" on stdout once it accepts connections, and
stores every message it accepts in --dir as NNNNNN.eml (the bytes after
DATA, dot-unstuffed) next to NNNNNN.json (envelope sender and recipients,
whether the session was encrypted, who authenticated). Both files appear
atomically, the .json first, before the server answers 250 to the DATA.

--mode starttls: STARTTLS offered and required before MAIL;
--mode tls:      TLS from the first byte (implicit TLS, "SMTPS");
--mode plain:    no TLS at all.
With --user/--password, AUTH PLAIN is offered (after TLS, if any) and
required; only that user and password are accepted.
A recipient whose local part starts with "reject" is refused with 550.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%06d" % self.count)
        transport = server.transport
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": transport is not None and transport.get_extra_info("ssl_object") is not None,
            "auth": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
        }
        write_atomic(base + ".json", json.dumps(meta).encode())
        write_atomic(base + ".eml", envelope.original_content)
        return "250 2.0.0 stored as %06d" % self.count


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if (mechanism == "PLAIN" and isinstance(auth_data, LoginPassword)
                and auth_data.login == self.user and auth_data.password == self.password):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--mode", choices=["starttls", "tls", "plain"], required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    handler = Store(args.dir)
    kwargs = {
        "hostname": "smtp.test",
        "auth_exclude_mechanism": ["LOGIN"],
    }
    if args.user:
        kwargs["authenticator"] = Authenticator(args.user, args.password or "")
        kwargs["auth_required"] = True
        # With implicit TLS or plain there is no STARTTLS for aiosmtpd to
        # wait for before it offers AUTH.
        kwargs["auth_require_tls"] = args.mode == "starttls"
    if args.mode == "starttls":
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, **kwargs),
            host="127.0.0.1",
            port=0,
            ssl=context if args.mode == "tls" else None,
        )
        host, port = server.sockets[0].getsockname()[:2]
        print("listening %s:%d" % (host, port), flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
