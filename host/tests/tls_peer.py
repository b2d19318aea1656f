"""A scripted SIP-over-TLS peer for host/tests/it/sip_tls.rs: the carrier's
side of a TLS trunk, where the tests need exact control of certificates.

  tls_peer.py client HOST PORT NUMBER [--cert PEM --key PEM] [--ca PEM]
      Connects (with a client certificate if given), sends one INVITE to
      NUMBER, prints every status line it gets back until the final one,
      ACKs a failure and exits. Prints `handshake failed: ...` and exits 2
      when TLS is refused.
  tls_peer.py srtp-call HOST PORT NUMBER --rtp-port P --packets N --out FILE
      Calls NUMBER over TLS offering RTP/SAVP with a key of its own
      (pylibsrtp), and once answered sends N SRTP packets, then one of them
      again (a replay), one under another key, and the key `5` as RFC 4733
      events inside SRTP, then hangs up. Writes the answer's SDP to FILE.
      With --rekey it first sends a re-INVITE with a new key, N packets
      under it and one under the old key (FILE.reanswer: the re-answer).
      With --sips the Request-URI is a sips: URI. Prints the answer's
      Contact.
  tls_peer.py server PORT --cert PEM --key PEM --client-ca PEM --out FILE
      Accepts one connection (asking for a client certificate), answers
      its INVITE with 486 Busy Here and writes the client certificate's
      subject and the INVITE's request line to FILE.
"""

import argparse
import socket
import ssl
import sys
import uuid


def read_message(stream, buffer):
    """One SIP message from `stream`: (head, body, what follows it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = stream.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    while len(rest) < length:
        chunk = stream.recv(65536)
        if not chunk:
            raise EOFError("connection closed in a body")
        rest += chunk
    return head.decode(), rest[:length].decode(), rest[length:]


def header(head, name):
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def final_response(stream, buffer):
    """Reads responses until the final one: (status, head, body, rest)."""
    while True:
        head, body, buffer = read_message(stream, buffer)
        status = int(head.split("\r\n")[0].split()[1])
        if status >= 200:
            return status, head, body, buffer


def request(method, uri, local, dialog, cseq, sdp=""):
    """A request in the dialog `dialog` (From, To, Call-ID), with an SDP
    body if given."""
    frm, to, call_id = dialog
    body = ""
    if sdp:
        body = (
            f"Contact: <sip:peer@{local};transport=tls>\r\n"
            f"Content-Type: application/sdp\r\n"
        )
    return (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"From: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Max-Forwards: 70\r\n{body}Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def client(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if args.ca:
        context.load_verify_locations(args.ca)
    else:
        context.verify_mode = ssl.CERT_NONE
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    raw = socket.create_connection((args.host, args.port), timeout=10)
    try:
        stream = context.wrap_socket(raw)
        # TLS 1.3 reports a refused client certificate only on first read.
        stream.settimeout(10)
    except (ssl.SSLError, OSError) as error:
        print(f"handshake failed: {error}")
        sys.exit(2)
    local = "%s:%d" % stream.getsockname()
    call_id = uuid.uuid4().hex
    branch = "z9hG4bK" + uuid.uuid4().hex
    sdp = (
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
    target = f"sip:{args.number}@{args.host}:{args.port};transport=tls"
    common = (
        f"Via: SIP/2.0/TLS {local};branch={branch}\r\n"
        f"From: <sip:+493099999999@{args.host}>;tag=carrier\r\n"
        f"To: <sip:{args.number}@{args.host}>\r\n"
        f"Call-ID: {call_id}\r\n"
    )
    invite = (
        f"INVITE {target} SIP/2.0\r\n{common}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:carrier@{local};transport=tls>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    try:
        stream.sendall(invite.encode())
        buffer = b""
        while True:
            head, _, buffer = read_message(stream, buffer)
            status_line = head.split("\r\n")[0]
            print(status_line, flush=True)
            code = int(status_line.split()[1])
            if code >= 200:
                break
    except (ssl.SSLError, OSError, EOFError) as error:
        print(f"handshake failed: {error}")
        sys.exit(2)
    if code >= 300:
        to = header(head, "To")
        ack = (
            f"ACK {target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch={branch}\r\n"
            f"From: <sip:+493099999999@{args.host}>;tag=carrier\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        stream.sendall(ack.encode())
    stream.close()


def srtp_call(args):
    import base64
    import os
    import struct
    import time

    import pylibsrtp

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream = context.wrap_socket(socket.create_connection((args.host, args.port), timeout=10))
    stream.settimeout(10)
    local = "%s:%d" % stream.getsockname()
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", args.rtp_port))
    ours = os.urandom(30)
    call_id = uuid.uuid4().hex
    sdp = (
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {args.rtp_port} RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(ours).decode()}\r\n"
    )
    if args.sips:
        target = f"sips:{args.number}@{args.host}:{args.port}"
    else:
        target = f"sip:{args.number}@{args.host}:{args.port};transport=tls"
    frm = f"<sip:+493099999999@{args.host}>;tag=peer"
    offering = (frm, f"<sip:{args.number}@{args.host}>", call_id)
    stream.sendall(request("INVITE", target, local, offering, 1, sdp))
    status, headers, body, buffer = final_response(stream, b"")
    if status != 200:
        print(f"final answer {status}")
        sys.exit(3)
    dialog = (frm, header(headers, "To"), call_id)
    contact = header(headers, "Contact").strip("<>").split(">")[0]
    print(f"answer Contact: {contact}", flush=True)
    stream.sendall(request("ACK", contact, local, dialog, 1))
    relay_port = None
    for line in body.splitlines():
        if line.startswith("m=audio "):
            relay_port = int(line.split()[1])
    with open(args.out, "w") as out:
        out.write(body)
    relay = ("127.0.0.1", relay_port)

    def session(key):
        policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        return pylibsrtp.Session(policy=policy)

    sender = session(ours)
    stranger = session(os.urandom(30))

    def packet(seq, pt=8, payload=b"\x55" * 160, marker=0, ts=None):
        ts = seq * 160 if ts is None else ts
        return struct.pack("!BBHII", 0x80, (marker << 7) | pt, seq, ts, 0x5EC0E7) + payload

    sent = []
    for seq in range(1, args.packets + 1):
        protected = sender.protect(packet(seq))
        sent.append(protected)
        rtp.sendto(protected, relay)
        time.sleep(0.02)
    rtp.sendto(sent[-1], relay)  # a replay
    rtp.sendto(stranger.protect(packet(args.packets + 1)), relay)  # another key
    seq = args.packets + 2
    ts = seq * 160
    for duration, end in ((160, False), (320, False), (480, True), (480, True)):
        event = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, duration)
        rtp.sendto(sender.protect(packet(seq, pt=101, payload=event, marker=int(duration == 160), ts=ts)), relay)
        seq += 1
        time.sleep(0.02)
    time.sleep(0.3)
    cseq = 2
    if args.rekey:
        # A re-INVITE with a new key of ours (same tag and suite): the
        # relay must take it, and refuse the old one from then on.
        new_key = os.urandom(30)
        reoffer = sdp.replace("o=peer 1 1", "o=peer 1 2").replace(
            base64.b64encode(ours).decode(), base64.b64encode(new_key).decode()
        )
        stream.sendall(request("INVITE", contact, local, dialog, cseq, reoffer))
        status, _, body, buffer = final_response(stream, buffer)
        if status != 200:
            print(f"re-INVITE answered {status}")
            sys.exit(4)
        with open(args.out + ".reanswer", "w") as out:
            out.write(body)
        stream.sendall(request("ACK", contact, local, dialog, cseq))
        cseq += 1
        renewed = session(new_key)
        time.sleep(0.1)
        for _ in range(args.packets):
            rtp.sendto(renewed.protect(packet(seq)), relay)
            seq += 1
            time.sleep(0.02)
        # The old key, after the new one: refused.
        rtp.sendto(sender.protect(packet(seq)), relay)
        time.sleep(0.3)
    stream.sendall(request("BYE", contact, local, dialog, cseq))
    head, _, _ = read_message(stream, buffer)
    print(head.split("\r\n")[0])
    stream.close()


def server(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.load_verify_locations(args.client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    listener = socket.create_server(("127.0.0.1", args.port))
    listener.settimeout(30)
    raw, _ = listener.accept()
    stream = context.wrap_socket(raw, server_side=True)
    stream.settimeout(10)
    peer = stream.getpeercert()
    subject = ""
    if peer:
        subject = ",".join("=".join(pair) for rdn in peer["subject"] for pair in rdn)
    head, _, _ = read_message(stream, b"")
    request_line = head.split("\r\n")[0]
    to = header(head, "To")
    reply = (
        "SIP/2.0 486 Busy Here\r\n"
        f"Via: {header(head, 'Via')}\r\nFrom: {header(head, 'From')}\r\n"
        f"To: {to};tag=busy\r\nCall-ID: {header(head, 'Call-ID')}\r\n"
        f"CSeq: {header(head, 'CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )
    stream.sendall(reply.encode())
    try:
        read_message(stream, b"")  # the ACK
    except (OSError, EOFError):
        pass
    with open(args.out, "w") as out:
        out.write(f"subject={subject}\nrequest={request_line}\n")
    stream.close()


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("number")
    c.add_argument("--cert")
    c.add_argument("--key")
    c.add_argument("--ca")
    r = commands.add_parser("srtp-call")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("number")
    r.add_argument("--rtp-port", type=int, required=True)
    r.add_argument("--packets", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--rekey", action="store_true")
    r.add_argument("--sips", action="store_true")
    s = commands.add_parser("server")
    s.add_argument("port", type=int)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--client-ca", required=True)
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    {"client": client, "server": server, "srtp-call": srtp_call}[args.command](args)


if __name__ == "__main__":
    main()
