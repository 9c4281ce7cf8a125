-- Periodic jobs run once per period across the fleet: each run first claims its period
-- here (a conditional UPDATE), inside a transaction that also holds the job's advisory lock.

-- +goose Up
CREATE TABLE job_runs (
    name        text PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE job_runs;
