-- kura's job store in PostgreSQL (schema version 1). Created by the first coordinator
-- that connects, under an advisory lock so that coordinators starting together do not
-- race; every statement is idempotent.
--
-- Records are JSON (the same serde types as the RocksDB store); the columns beside
-- them are what queries select and order by, kept in step by the store's writes.
-- Text columns that are ordered use the "C" collation: byte order, like RocksDB's keys.

CREATE TABLE IF NOT EXISTS kura_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE IF NOT EXISTS kura_jobs (
    id text COLLATE "C" PRIMARY KEY,
    state text NOT NULL,
    final boolean NOT NULL,
    profile text NOT NULL,
    source text NOT NULL,
    batch text,
    updated_ms bigint NOT NULL,
    body jsonb NOT NULL
);
-- The jobs under way, by what they transcode: batches skip sources a job still runs.
CREATE INDEX IF NOT EXISTS kura_jobs_active ON kura_jobs (profile, source) WHERE NOT final;
CREATE INDEX IF NOT EXISTS kura_jobs_batch ON kura_jobs (batch) WHERE batch IS NOT NULL;
CREATE INDEX IF NOT EXISTS kura_jobs_ended ON kura_jobs (updated_ms) WHERE final AND batch IS NULL;

CREATE TABLE IF NOT EXISTS kura_tasks (
    id text COLLATE "C" PRIMARY KEY,
    job_id text COLLATE "C" NOT NULL,
    state text NOT NULL,
    -- The lease order: band (priority, urgent), tenant, flow, then job and ready time.
    priority smallint NOT NULL,
    urgent boolean NOT NULL,
    tenant text COLLATE "C" NOT NULL,
    flow text COLLATE "C" NOT NULL,
    cost double precision NOT NULL,
    ready_ms bigint NOT NULL,
    lease_expires_ms bigint,
    body jsonb NOT NULL
) WITH (fillfactor = 80); -- room in each page for the HOT updates of heartbeats
-- A job's tasks, and those in one state (the charge's "one task of the job left queued?").
DROP INDEX IF EXISTS kura_tasks_job;
CREATE INDEX IF NOT EXISTS kura_tasks_job_state ON kura_tasks (job_id, state);
-- The queue: every queued task, in lease order within its flow, and the bands in
-- priority order (so that the pick's fallback reads it in index order, not sorted).
DROP INDEX IF EXISTS kura_tasks_queue;
CREATE INDEX IF NOT EXISTS kura_tasks_queued ON kura_tasks
    (priority DESC, urgent DESC, tenant, flow, job_id, ready_ms, id) WHERE state = 'queued';
-- The leases: the reaper reads them all (a few per worker slot) and keeps the expired
-- ones. Not keyed by expiry: a heartbeat then changes no indexed column, so its update
-- is HOT (written in the row's page, no index entries).
DROP INDEX IF EXISTS kura_tasks_leases;
CREATE INDEX IF NOT EXISTS kura_tasks_leased ON kura_tasks (id) WHERE state = 'leased';

CREATE TABLE IF NOT EXISTS kura_workers (
    id text PRIMARY KEY,
    body jsonb NOT NULL
);

CREATE TABLE IF NOT EXISTS kura_batches (
    id text COLLATE "C" PRIMARY KEY,
    created_ms bigint NOT NULL,
    body jsonb NOT NULL
);

-- Webhook deliveries not made yet (`coordinator/webhook.rs`): written with the transition
-- that makes them, claimed by any coordinator's sender (`next_ms` pushed on), deleted
-- once delivered.
CREATE TABLE IF NOT EXISTS kura_outbox (
    id text COLLATE "C" PRIMARY KEY,
    next_ms bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS kura_outbox_due ON kura_outbox (next_ms);

-- The records' JSON bodies are never selected by: `ANALYZE` (which the coordinators run
-- as tables grow, `pg/stats.rs`) skips them, half its time for the tasks.
ALTER TABLE kura_jobs ALTER COLUMN body SET STATISTICS 0;
ALTER TABLE kura_tasks ALTER COLUMN body SET STATISTICS 0;
ALTER TABLE kura_workers ALTER COLUMN body SET STATISTICS 0;
ALTER TABLE kura_batches ALTER COLUMN body SET STATISTICS 0;
ALTER TABLE kura_outbox ALTER COLUMN body SET STATISTICS 0;

-- Fencing tokens: the server's timeline above a value of this sequence (`pg/txn.rs`). A
-- sequence can hand a value out twice across a failover to a standby that was behind;
-- the promoted standby writes a new timeline, so tokens stay unique all the same.
CREATE SEQUENCE IF NOT EXISTS kura_tokens;

-- The lease order's soft state (start-time fair queueing, `store/sched.rs`): the virtual
-- time of each band (priority, urgent) and of each active tenant in it (the start tag
-- of the one served last: where a newly active tenant or flow starts, so none saves
-- credit while idle), and the tags of active tenants and flows. Changed after the
-- transition that queues or leases a task commits, in a transaction without a
-- synchronous commit: losing a change costs fairness, never a task (a queued task with
-- no flow row is still found, and its row rebuilt).
CREATE TABLE IF NOT EXISTS kura_sched_bands (
    priority smallint NOT NULL,
    urgent boolean NOT NULL,
    vclock double precision NOT NULL,
    PRIMARY KEY (priority, urgent)
);
CREATE TABLE IF NOT EXISTS kura_sched_tenants (
    priority smallint NOT NULL,
    urgent boolean NOT NULL,
    tenant text COLLATE "C" NOT NULL,
    tag double precision NOT NULL,
    vclock double precision NOT NULL,
    PRIMARY KEY (priority, urgent, tenant)
);
CREATE TABLE IF NOT EXISTS kura_sched_flows (
    priority smallint NOT NULL,
    urgent boolean NOT NULL,
    tenant text COLLATE "C" NOT NULL,
    flow text COLLATE "C" NOT NULL,
    tag double precision NOT NULL,
    PRIMARY KEY (priority, urgent, tenant, flow)
);
CREATE INDEX IF NOT EXISTS kura_sched_flows_order
    ON kura_sched_flows (priority, urgent, tenant, tag, flow);

-- A write that must change exactly one row, sent without waiting for its answer
-- (`pg/txn.rs`): anything else fails its transaction, which then cannot commit.
CREATE OR REPLACE FUNCTION kura_expect_one(n bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF n <> 1 THEN
        RAISE EXCEPTION 'kura: % rows changed where one was expected', n
            USING ERRCODE = 'no_data_found';
    END IF;
END $$;

-- A task of this flow is queued: makes the flow (and its tenant, and band) active at
-- its parent's virtual time if it is not. Looks before inserting, so the common case
-- (already active) writes nothing and waits for no lock.
CREATE OR REPLACE FUNCTION kura_sched_insert(p smallint, u boolean, tn text, fl text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM kura_sched_flows
               WHERE priority = p AND urgent = u AND tenant = tn AND flow = fl) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM kura_sched_tenants
                   WHERE priority = p AND urgent = u AND tenant = tn) THEN
        IF NOT EXISTS (SELECT 1 FROM kura_sched_bands WHERE priority = p AND urgent = u) THEN
            INSERT INTO kura_sched_bands VALUES (p, u, 0) ON CONFLICT DO NOTHING;
        END IF;
        INSERT INTO kura_sched_tenants
            SELECT p, u, tn, vclock, vclock FROM kura_sched_bands
            WHERE priority = p AND urgent = u
            ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO kura_sched_flows
        SELECT p, u, tn, fl, vclock FROM kura_sched_tenants
        WHERE priority = p AND urgent = u AND tenant = tn
        ON CONFLICT DO NOTHING;
END $$;

-- A task of this flow left the queue: a flow with no queued task, and then a tenant
-- with no flow, are no longer active.
CREATE OR REPLACE FUNCTION kura_sched_prune(p smallint, u boolean, tn text, fl text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM kura_sched_flows f
        WHERE f.priority = p AND f.urgent = u AND f.tenant = tn AND f.flow = fl
        AND NOT EXISTS (SELECT 1 FROM kura_tasks t WHERE t.state = 'queued'
            AND t.priority = p AND t.urgent = u AND t.tenant = tn AND t.flow = fl);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM kura_sched_tenants n
        WHERE n.priority = p AND n.urgent = u AND n.tenant = tn
        AND NOT EXISTS (SELECT 1 FROM kura_sched_flows f
            WHERE f.priority = p AND f.urgent = u AND f.tenant = tn);
END $$;

-- A task of this flow was leased: its cost is charged to its flow and tenant (the
-- tenant's and the band's virtual time move to the start tags of the ones served), and
-- when that leaves its job one queued task, that task moves to the urgent band. The
-- rows every lease of a band shares (its tenant's, the band's) are written last, so
-- they are held for the least time.
CREATE OR REPLACE FUNCTION kura_sched_charge(
    p smallint, u boolean, tn text, fl text, c double precision, j text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    last text;
    lt kura_tasks%ROWTYPE;
    flow_start double precision;
    tenant_start double precision;
BEGIN
    -- Is one task of the job left queued? (Two found are enough to say no.)
    SELECT count(*), min(id) INTO n, last FROM
        (SELECT id FROM kura_tasks WHERE job_id = j AND state = 'queued' LIMIT 2) q;
    IF n = 1 THEN
        UPDATE kura_tasks SET urgent = true
            WHERE id = last AND state = 'queued' AND NOT urgent
            RETURNING * INTO lt;
        IF FOUND THEN
            PERFORM kura_sched_insert(lt.priority, true, lt.tenant, lt.flow);
            PERFORM kura_sched_prune(lt.priority, false, lt.tenant, lt.flow);
        END IF;
    END IF;
    UPDATE kura_sched_flows SET tag = tag + c
        WHERE priority = p AND urgent = u AND tenant = tn AND flow = fl
        RETURNING tag - c INTO flow_start;
    IF NOT FOUND THEN
        PERFORM kura_sched_insert(p, u, tn, fl);
        UPDATE kura_sched_flows SET tag = tag + c
            WHERE priority = p AND urgent = u AND tenant = tn AND flow = fl
            RETURNING tag - c INTO flow_start;
    END IF;
    PERFORM kura_sched_prune(p, u, tn, fl);
    UPDATE kura_sched_tenants SET tag = tag + c, vclock = COALESCE(flow_start, vclock)
        WHERE priority = p AND urgent = u AND tenant = tn
        RETURNING tag - c INTO tenant_start;
    UPDATE kura_sched_bands SET vclock = tenant_start
        WHERE priority = p AND urgent = u AND tenant_start IS NOT NULL;
END $$;

-- The next task to lease, locked (`FOR UPDATE SKIP LOCKED`: concurrent picks take
-- different tasks): tenants in band and tag order, then each one's flows in tag order,
-- then the first task of a flow that is ready by `now_ms`, weighs at most `max_cost`
-- and is not in `exclude`; at most `budget` flows looked into before the plain
-- priority order (flows whose tasks are all backed off or too heavy are skipped one
-- by one; the fallback takes the first ready task in the queue index's order). One
-- statement for what took a round trip per tenant and flow.
CREATE OR REPLACE FUNCTION kura_pick(
    now_ms bigint, max_cost double precision, exclude text[], budget integer)
RETURNS SETOF kura_tasks LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
    t record;
    f record;
    left_ integer := budget;
BEGIN
    FOR t IN SELECT s.priority, s.urgent, s.tenant FROM kura_sched_tenants s
             ORDER BY s.priority DESC, s.urgent DESC, s.tag, s.tenant LIMIT budget LOOP
        FOR f IN SELECT s.flow FROM kura_sched_flows s
                 WHERE s.priority = t.priority AND s.urgent = t.urgent AND s.tenant = t.tenant
                 ORDER BY s.tag, s.flow LIMIT left_ LOOP
            left_ := left_ - 1;
            RETURN QUERY SELECT * FROM kura_tasks k
                WHERE k.state = 'queued' AND k.priority = t.priority AND k.urgent = t.urgent
                AND k.tenant = t.tenant AND k.flow = f.flow AND k.ready_ms <= now_ms
                AND k.cost <= max_cost AND NOT (k.id = ANY(exclude))
                ORDER BY k.job_id, k.ready_ms, k.id LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                RETURN;
            END IF;
        END LOOP;
        IF left_ <= 0 THEN
            EXIT;
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM kura_tasks k
        WHERE k.state = 'queued' AND k.ready_ms <= now_ms AND k.cost <= max_cost
        AND NOT (k.id = ANY(exclude))
        ORDER BY k.priority DESC, k.urgent DESC, k.tenant, k.flow, k.job_id, k.ready_ms, k.id
        LIMIT 1 FOR UPDATE SKIP LOCKED;
END $$;
