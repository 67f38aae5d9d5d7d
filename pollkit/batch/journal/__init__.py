"""The journal: a batch's durable record, behind the `Journal` protocol the scheduler speaks.

`_records` holds what is recorded (entries, outputs, spec keys), `_protocol` the protocol,
`_sqlite` the embedded backend (one file per batch directory), `_threaded` its async face with
the priority write lane, `_lock` the one-live-run lock of an SQLite journal, and `_open` what a
batch's ``journal=`` argument opens. `_postgres` is the PostgreSQL backend that runners share
(the ``postgres`` extra, imported only when a ``postgresql://`` journal is opened), `_pg_schema`
its tables and DSN redaction, `_pg_claims` the statements of runners: load, claim, heartbeat,
settle, and the batch's view.
"""
