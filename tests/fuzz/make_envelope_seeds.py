# SPDX-License-Identifier: Apache-2.0
# Writes the fuzz_envelope seed corpus: Envelopes from protobuf text, encoded with protoc.
# Usage: python3 tests/fuzz/make_envelope_seeds.py tests/fuzz/corpus/fuzz_envelope (from the top).
import subprocess, sys, os
C = sys.argv[1]
def enc(text):
    return subprocess.run(["protoc", "--encode=quartzflow.v1.Envelope", "-I", "proto", "proto/quartzflow/v1/agent_protocol.proto"],
                          input=text.encode(), capture_output=True, check=True).stdout
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def frame(m): return varint(len(m)) + m
task = 'id: "report" name: "report" enabled: true shell { argv: "/bin/sh" argv: "-c" argv: "echo hi" env { key: "A" value: "b" } } schedule { cron: "*/10 * * * * *" time_zone: "Europe/Paris" } placement { mode: PLACEMENT_MODE_ONE } group_ids: "demo" timeout_seconds: 10 labels { key: "team" value: "ops" }'
seeds = {
 "register": 'protocol_version: 1 message_id: 1 sent_unix_ms: 1767225600000 register_request { agent_id: "agent-1" hostname: "host" ips: "127.0.0.1" labels { key: "demo" value: "true" } agent_version: "0.1.0" platform: "linux" config_group_id: "demo" executors: "shell" executors: "http" running_execution_ids: "e1" }',
 "heartbeat": 'protocol_version: 1 message_id: 7 heartbeat { applied_config_version: 3 agent_unix_ms: 1767225600000 running_executions: 2 load_average_1m: 0.5 local_store_disk_full: true local_store_error: "disk full" }',
 "run_request": 'protocol_version: 1 message_id: 9 run_request { execution_id: "e-1" task_id: "report" task_revision: 2 attempt: 1 shard_index: 0 shard_total: 2 params { key: "region" value: "eu" } task { %s } }' % task,
 "config_snapshot": 'protocol_version: 1 message_id: 3 in_reply_to: 2 config_snapshot { config_version: 5 group_id: "demo" tasks { %s } tasks { id: "b" name: "b" } }' % task,
 "goodbye": 'protocol_version: 1 message_id: 4 goodbye { reason: GOODBYE_REASON_SHUTDOWN message: "bye" }',
 "bad_version": 'protocol_version: 2 message_id: 1 goodbye { reason: GOODBYE_REASON_SHUTDOWN }',
 "no_body": 'protocol_version: 1 message_id: 1',
}
msgs = {k: enc(v) for k, v in seeds.items()}
def write(name, data):
    open(os.path.join(C, name), "wb").write(data)
for k, m in msgs.items():
    write(k, b"\xff" + frame(m))          # one read of 256 bytes at a time
write("stream-of-three-small-reads", b"\x02" + frame(msgs["register"]) + frame(msgs["heartbeat"]) + frame(msgs["goodbye"]))
write("byte-by-byte", b"\x00" + frame(msgs["heartbeat"]))
write("partial-message", b"\xff" + frame(msgs["run_request"])[:-5])
write("oversized-length", b"\xff" + varint(70000) + b"x" * 8)
write("overlong-varint", b"\xff" + b"\xff" * 11)
write("non-minimal-varint", b"\xff" + b"\x80\x00" + frame(msgs["goodbye"]))
write("empty-frame", b"\xff\x00")
