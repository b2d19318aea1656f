"""Writes dtmf_star_1.pcap: RFC 4733 key presses * then 1, 300 ms apart,
one RTP stream (the sequence numbers and timestamps of SIPp's
dtmf_2833_1.pcap renumbered to follow dtmf_2833_star.pcap, as a phone
sends them). Played by uac_stop.xml.

    python3 tests/sipp/pcap/make_dtmf_star_1.py
"""
import struct
import sys

SOURCE = "/usr/share/sip-tester"
GAP_US = 300_000  # between the end of * and the start of 1
GAP_TICKS = 8 * GAP_US // 1000  # the 8 kHz RTP clock


def packets(path):
    data = open(path, "rb").read()
    header, offset, found = data[:24], 24, []
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[offset:offset + 16])
        offset += 16
        found.append([sec * 1_000_000 + usec, bytearray(data[offset:offset + incl]), orig])
        offset += incl
    return header, found


def main(out):
    header, star = packets(f"{SOURCE}/dtmf_2833_star.pcap")
    _, one = packets(f"{SOURCE}/dtmf_2833_1.pcap")
    rtp = 42  # Ethernet 14 + IPv4 20 + UDP 8
    last_seq, last_ts = struct.unpack(">HI", star[-1][1][rtp + 2:rtp + 8])
    ssrc = star[0][1][rtp + 8:rtp + 12]
    start = star[-1][0] + GAP_US
    first_time = one[0][0]
    first_ts = struct.unpack(">I", one[0][1][rtp + 4:rtp + 8])[0]
    for index, packet in enumerate(one):
        body = packet[1]
        ts = struct.unpack(">I", body[rtp + 4:rtp + 8])[0]
        body[rtp + 2:rtp + 8] = struct.pack(
            ">HI", (last_seq + 1 + index) & 0xFFFF, (last_ts + GAP_TICKS + ts - first_ts) & 0xFFFFFFFF
        )
        body[rtp + 8:rtp + 12] = ssrc
        packet[0] = start + packet[0] - first_time
    with open(out, "wb") as file:
        file.write(header)
        for time, body, orig in star + one:
            file.write(struct.pack("<IIII", time // 1_000_000, time % 1_000_000, len(body), orig))
            file.write(body)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/sipp/pcap/dtmf_star_1.pcap")
