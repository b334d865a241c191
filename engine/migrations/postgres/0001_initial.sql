-- Medic's run store on PostgreSQL, version 1. Records and journal entries are stored as the
-- same JSON the embedded store keeps; the columns beside them are what queries filter on.

-- Every process using the store: who it is and when it last said it was alive. A run whose
-- process stopped saying so is interrupted (see `recover` in engine/src/store/postgres.rs).
CREATE TABLE medic_owners (
    owner_id     text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    command      text NOT NULL,
    started_ms   bigint NOT NULL,
    heartbeat_ms bigint NOT NULL
);

CREATE TABLE medic_runs (
    run_id       text COLLATE "C" PRIMARY KEY,
    started_ms   bigint NOT NULL,
    status       text NOT NULL,
    runbook      text NOT NULL,
    environment  text NOT NULL,
    trigger_kind text NOT NULL,
    -- The process running it (medic_owners), while it runs.
    owner_id     text,
    record       text NOT NULL
);
CREATE INDEX medic_runs_running ON medic_runs (owner_id) WHERE status = 'running';

CREATE TABLE medic_events (
    run_id text COLLATE "C" NOT NULL,
    seq    integer NOT NULL,
    entry  text NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE medic_locks (
    key      text PRIMARY KEY,
    run_id   text NOT NULL,
    owner_id text NOT NULL,
    holder   text NOT NULL
);

CREATE TABLE medic_drills (
    drill      text NOT NULL,
    started_ms bigint NOT NULL,
    tie        text NOT NULL,
    record     text NOT NULL,
    PRIMARY KEY (drill, started_ms, tie)
);

CREATE TABLE medic_drill_state (
    drill             text PRIMARY KEY,
    last_scheduled_ms bigint,
    paused            text
);

CREATE TABLE medic_trigger_state (
    trigger text PRIMARY KEY,
    state   text NOT NULL
);

CREATE TABLE medic_alerts (
    id     bigserial PRIMARY KEY,
    at_ms  bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX medic_alerts_at ON medic_alerts (at_ms, id);
