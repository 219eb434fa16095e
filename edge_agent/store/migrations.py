"""The store's schema, only ever changed by appending a step here (never edit a shipped step)."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("edge_agent")


@migrations()
def m001_initial(db: Database) -> None:
    # AUTOINCREMENT: a seq is never reused, even after readings are purged, so central can
    # trust "last contiguous seq" forever.
    db.execute(
        """
        CREATE TABLE readings (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            unit_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            quantity TEXT NOT NULL,
            value REAL,
            unit TEXT NOT NULL,
            loinc TEXT,
            mdc INTEGER,
            device_time TEXT,
            received_at TEXT NOT NULL,
            clock_source TEXT NOT NULL,
            flags TEXT NOT NULL DEFAULT '[]',
            absent_reason TEXT,
            context TEXT NOT NULL DEFAULT '[]',
            raw BLOB,
            encounter_id TEXT,
            batch_id TEXT,
            sent_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX readings_unsent ON readings(seq) WHERE sent_at IS NULL")
    db.execute(
        """
        CREATE TABLE rejects (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            raw BLOB NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            device_id TEXT,
            detail TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute(
        """
        CREATE TABLE device_cursors (
            device_id TEXT PRIMARY KEY,
            cursor INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            seq_from INTEGER NOT NULL,
            seq_to INTEGER NOT NULL,
            count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            acked_at TEXT
        )
        """
    )


@migrations()
def m002_reading_position(db: Database) -> None:
    # The van's GPS position when the reading was taken (NULL: no recent fix).
    db.execute("ALTER TABLE readings ADD COLUMN latitude REAL")
    db.execute("ALTER TABLE readings ADD COLUMN longitude REAL")


@migrations()
def m003_agent_state(db: Database) -> None:
    # Small facts the running agent publishes for `edge-agent sync status` and requests the CLI
    # leaves for it (`sync now`): one JSON value per key.
    db.execute(
        "CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "updated_at TEXT NOT NULL)"
    )


@migrations()
def m004_identity_membership(db: Database) -> None:
    # The store's identity: an epoch made when the store is created (or first upgraded). A unit
    # that starts over with a new store starts a new epoch, so central never confuses its seq 1
    # with the seq 1 of the store it replaced.
    import uuid
    from datetime import UTC, datetime

    db.execute(
        "CREATE TABLE store_identity (key TEXT PRIMARY KEY CHECK (key = 'store'), "
        "epoch TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    # A store upgraded with readings in it keeps the epoch central filed them under before
    # epochs existed (the all-zero one), so its seqs stay contiguous at central.
    upgraded = db.execute("SELECT count(*) FROM readings").fetchone()[0] > 0
    epoch = str(uuid.UUID(int=0)) if upgraded else str(uuid.uuid4())
    db.execute(
        "INSERT INTO store_identity (key, epoch, created_at) VALUES ('store', ?, ?)",
        [epoch, datetime.now(UTC).isoformat(timespec="seconds")],
    )
    # Batch membership: readings.batch_id is set when a batch is recorded (not at its ack), so an
    # ack marks exactly the readings the batch carried, and a reading is in at most one batch
    # in flight. priority = 1 for alert-range readings: they leave first, in their own batches.
    # refused: central's reason when it would not hold a reading (an alarm, never retried blindly).
    db.execute("ALTER TABLE readings ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE readings ADD COLUMN refused TEXT")
    db.execute("ALTER TABLE batches ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE readings SET priority = 1 WHERE sent_at IS NULL AND flags LIKE '%\"alert\"%'"
    )
    # Unacknowledged batches of the range era: their unsent readings become their members.
    db.execute(
        "UPDATE readings SET batch_id = (SELECT b.batch_id FROM batches b WHERE b.acked_at IS "
        "NULL AND readings.seq BETWEEN b.seq_from AND b.seq_to) WHERE sent_at IS NULL"
    )
    db.execute("DROP INDEX IF EXISTS readings_unsent")
    db.execute(
        "CREATE INDEX readings_outbox ON readings(priority DESC, seq) "
        "WHERE sent_at IS NULL AND batch_id IS NULL"
    )
    db.execute("CREATE INDEX readings_batch ON readings(batch_id) WHERE sent_at IS NULL")
    db.execute("CREATE INDEX readings_unsent ON readings(seq) WHERE sent_at IS NULL")
    db.execute("DELETE FROM agent_state WHERE key = 'alert-cursor'")


@migrations()
def m005_encounters(db: Database) -> None:
    # A patient's encounter with the unit (`edge-agent patient open/close`): the patient's
    # identifier (system + value: the only patient data in the store), who (the configured
    # practitioner role), when, and where (the van's last GPS fix when it was opened). At most
    # one encounter is open at a time; readings taken while it is open are bound to it.
    db.execute(
        """
        CREATE TABLE encounters (
            id TEXT PRIMARY KEY,
            patient_system TEXT NOT NULL,
            patient_value TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            closed_at TEXT,
            practitioner_role TEXT,
            latitude REAL,
            longitude REAL,
            altitude REAL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX encounters_open ON encounters((1)) WHERE closed_at IS NULL")
    # The source record's identity (HL7 MSH-10 + OBX...: Measurement.source_key), sent as a
    # business identifier; attributed_at: when `patient assign` bound an already taken reading
    # to an encounter (it goes to central again, as a conditional update).
    db.execute("ALTER TABLE readings ADD COLUMN source_key TEXT")
    db.execute("ALTER TABLE readings ADD COLUMN attributed_at TEXT")


@migrations()
def m010_attachments(db: Database) -> None:
    # Teleconsultation files (edge_agent/files/attachments.py): one row per content (sha256),
    # the file itself under attachments/ beside the store, fsynced before this row commits.
    # central_holds_at: central acknowledged the whole file (only then may it be evicted);
    # evicted_at: the local copy was removed under the disk budget; failed: central refused it
    # for good (a final checksum that never matches), kept for an operator.
    db.execute(
        """
        CREATE TABLE attachments (
            file_id TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            media_type TEXT NOT NULL,
            kind TEXT NOT NULL,
            name TEXT,
            source_device TEXT,
            encounter_id TEXT,
            study_uid TEXT,
            series_uid TEXT,
            instance_uid TEXT,
            sop_class_uid TEXT,
            modality TEXT,
            received_at TEXT NOT NULL,
            central_holds_at TEXT,
            evicted_at TEXT,
            failed TEXT
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX attachments_instance ON attachments(instance_uid) "
        "WHERE instance_uid IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX attachments_unsent ON attachments(received_at) "
        "WHERE central_holds_at IS NULL AND failed IS NULL"
    )


@migrations()
def m011_device_facts(db: Database) -> None:
    # What each configured device told us about itself (drivers.base.DeviceFacts: BLE Device
    # Information, HL7 MSH-3/MSH-4/OBX-18, ASTM H-5) and what its configuration says (the BLE
    # address, the IEEE 11073-10101 specialization of its kind), keyed by the configured
    # device id. The codec sends it as the FHIR Device; a value the device stops reporting is
    # kept (NULL never overwrites).
    db.execute(
        """
        CREATE TABLE device_facts (
            device_id TEXT PRIMARY KEY,
            serial TEXT,
            system_id TEXT,
            mac TEXT,
            manufacturer TEXT,
            model TEXT,
            firmware TEXT,
            mdc_type INTEGER,
            updated_at TEXT NOT NULL
        )
        """
    )


@migrations()
def m012_device_facts_acked(db: Database) -> None:
    # A Device's facts travel in full until central acknowledged a batch that carried them:
    # ``acked_version`` is the ``updated_at`` of the facts central holds; a batch records the
    # versions it carried in full (``batches.device_versions``, JSON {device: version}).
    db.execute("ALTER TABLE device_facts ADD COLUMN acked_version TEXT")
    db.execute("ALTER TABLE batches ADD COLUMN device_versions TEXT")
