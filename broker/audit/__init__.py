"""The audit trail: one hash-chained, append-only record per request the broker decides.

Modules, each with one job:

- `config`     AuditConfig, the `audit:` section of the broker config
- `sink`       the AuditSink protocol, AuditUnavailable, SinkStatus
- `records`    the record of a decided request, an authentication failure, a policy reload,
               an approval event
- `redact`     the Redactor protocol and the conservative built-in secret redactor
- `chain`      sealing a record into the chain (seq, prev, hash) and checking one line
- `signing`    Ed25519 checkpoint keys, messages and signatures
- `layout`     file names in an audit directory, reading a file's last record, torn tails
- `fileops`    the system calls the file sink makes (tests wrap it to count fsyncs)
- `resume`     continuing the chain where the files end: start, crash recovery, torn lines
- `file_sink`  FileAuditSink: group commit, rotation, checkpoints, crash recovery
- `verify`     verify files or a directory; the first broken link with file:line and why
- `query`      filter records; replay a session
- `timefmt`    the format version and the time format of every record
- `cli`        `mcp-broker audit verify|query|replay|keygen`

The format and guarantees are described in docs/audit.md.
"""
