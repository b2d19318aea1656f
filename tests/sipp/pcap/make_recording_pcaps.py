"""Writes the RTP captures of host/tests/it/recording_audio.rs, one RTP
stream each (Ethernet, IPv4, UDP, RTP; SIPp's play_pcap_audio sends them
to the peer's SDP address, keeping the RTP headers and the timing):

- g722_pattern_a.pcap, g722_pattern_b.pcap: G.722 (payload type 9), 3 s,
  150 packets of 160 octets every 20 ms, RTP timestamp step 160 (G.722's
  8 kHz RTP clock, RFC 3551). Octet i of the stream is a known pattern
  (`g722_octet`), never 0xFF (the recorder's G.722 silence). Played by
  uac_g722.xml (a) and uas_g722.xml (b).
- alaw_marked_loss.pcap: A-law (payload type 8), packets k = 0..99 of 160
  samples every 20 ms, every sample of packet k the byte `mark(k)`, with
  packets 50..54 (sequence numbers and timestamps) left out, as a network
  losing them would. Played by uac_alaw_loss.xml.
- alaw_marked.pcap: as alaw_marked_loss.pcap, nothing left out, another
  SSRC and numbering. Played by t_uas_hangup_marked.xml.
- alaw_marked_other.pcap: A-law, 50 packets (1 s), every sample of
  packet k the byte `mark(k, OTHER)`, so that it is told apart from
  alaw_marked.pcap in one recording. Played by uas_transfer_marked.xml.

    python3 tests/sipp/pcap/make_recording_pcaps.py [DIRECTORY]
"""
import os
import struct
import sys

PACKET_US = 20_000
SAMPLES = 160  # per packet: 20 ms of the 8 kHz RTP clock
START_SEC = 1_700_000_000

# What every sample of A-law packet k is (host/tests/it/recording_audio.rs
# has the same function): never 0xD5, the A-law silence, for k < 100
# (base 0x20) and k < 50 (base OTHER).
def mark(k, base=0x20):
    return base + k


OTHER = 0x90


# Octet i of the G.722 streams: `base` + a slow ramp, never 0xFF.
def g722_octet(base, i):
    return base + (i // 7) % 0x60


def checksum(header):
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(rtp):
    udp_len = 8 + len(rtp)
    ip = bytearray(struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    ip[10:12] = struct.pack(">H", checksum(bytes(ip)))
    udp = struct.pack(">HHHH", 40000, 40002, udp_len, 0)
    ethernet = bytes.fromhex("020000000002" "020000000001" "0800")
    return ethernet + bytes(ip) + udp + rtp


def write(path, ssrc, packets):
    """`packets`: (index on the 20 ms grid, sequence, timestamp, payload
    type, marker, payload), all with the SSRC `ssrc`."""
    with open(path, "wb") as file:
        file.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for slot, seq, ts, pt, marker, payload in packets:
            rtp = struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt,
                              seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload
            body = frame(rtp)
            us = slot * PACKET_US
            file.write(struct.pack("<IIII", START_SEC + us // 1_000_000,
                                   us % 1_000_000, len(body), len(body)))
            file.write(body)


def g722(path, base, ssrc):
    packets = []
    for k in range(150):
        payload = bytes(g722_octet(base, k * SAMPLES + i) for i in range(SAMPLES))
        packets.append((k, 1000 + k, 16_000 + k * SAMPLES, 9, k == 0, payload))
    write(path, ssrc, packets)


def alaw(path, missing, seq0, ts0, ssrc, count=100, base=0x20):
    packets = []
    for k in range(count):
        if k in missing:
            continue
        payload = bytes([mark(k, base)]) * SAMPLES
        packets.append((k, seq0 + k, ts0 + k * SAMPLES, 8, k == 0, payload))
    write(path, ssrc, packets)


def main(directory):
    g722(os.path.join(directory, "g722_pattern_a.pcap"), 0x10, 0x0722000A)
    g722(os.path.join(directory, "g722_pattern_b.pcap"), 0x80, 0x0722000B)
    alaw(os.path.join(directory, "alaw_marked_loss.pcap"), range(50, 55),
         20_000, 400_000, 0x0A1A0001)
    alaw(os.path.join(directory, "alaw_marked.pcap"), (), 40_000, 7_000_000, 0x0A1A0002)
    alaw(os.path.join(directory, "alaw_marked_other.pcap"), (), 5_000, 90_000, 0x0A1A0003,
         count=50, base=OTHER)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/sipp/pcap")
