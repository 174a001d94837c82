-- AI-agent task console example schema (from the seed document "react-app-electric-integration"):
-- tasks and environments users edit, agent runs and their events the server owns, agent memory
-- with importance-based conflict resolution, and admin-controlled workflows.
--
-- Rows belong to a user through owner_id (the token's `sub`, the users.id as text). Timestamps
-- the console keeps locally for a limited time (created_at of executions, at of events,
-- expires_at of memory) are NOT NULL or explicitly open-ended, so the shapes' time windows
-- can judge every row.

-- The people who sign in. `role` decides who may change workflows (the dev sign-in puts it in
-- the token as the `role` claim).
CREATE TABLE users (
  id          uuid PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  avatar_url  text,
  color       text NOT NULL DEFAULT '#64748b',
  role        text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member'))
);

-- Where a user's agents run. One environment per user is active: activating one deactivates the
-- others in the same transaction (the trigger below), so two devices activating different ones
-- end with the later activation active, never with two.
CREATE TABLE environments (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id    text NOT NULL,
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  config      jsonb NOT NULL DEFAULT '{}',
  is_active   boolean NOT NULL DEFAULT false,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX environments_one_active ON environments (owner_id) WHERE is_active;

CREATE FUNCTION environments_keep_one_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.is_active THEN
    UPDATE environments SET is_active = false, updated_at = now()
     WHERE owner_id = NEW.owner_id AND id <> NEW.id AND is_active;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER environments_keep_one_active BEFORE INSERT OR UPDATE OF is_active ON environments
  FOR EACH ROW EXECUTE FUNCTION environments_keep_one_active();

-- status: todo (pending) → running (in progress, set by the agent runner) → done / failed.
CREATE TABLE tasks (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id        text NOT NULL,
  environment_id  uuid REFERENCES environments(id) ON DELETE SET NULL,
  title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
  description     text NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
  status          text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'running', 'done', 'failed')),
  priority        int NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 10),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_executions (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     text NOT NULL,
  task_id      uuid REFERENCES tasks(id) ON DELETE CASCADE,
  agent        text NOT NULL,
  status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  started_at   timestamptz,
  finished_at  timestamptz
);
CREATE INDEX agent_executions_created_at ON agent_executions (created_at);

CREATE TABLE observability_events (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id      text NOT NULL,
  execution_id  uuid NOT NULL REFERENCES agent_executions(id) ON DELETE CASCADE,
  level         text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warn', 'error')),
  message       text NOT NULL,
  at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX observability_events_at ON observability_events (at);

-- expires_at NULL: kept until deleted.
CREATE TABLE agent_memory (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id          text NOT NULL,
  agent             text NOT NULL,
  content           text NOT NULL CHECK (length(content) BETWEEN 1 AND 10000),
  importance        int NOT NULL DEFAULT 0 CHECK (importance BETWEEN 0 AND 10),
  last_accessed_at  timestamptz NOT NULL DEFAULT now(),
  expires_at        timestamptz,
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_memory_expires_at ON agent_memory (expires_at);

-- definition: {"steps": ["task title", …]}; running a workflow creates one task per step.
CREATE TABLE workflows (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  description  text NOT NULL DEFAULT '',
  definition   jsonb NOT NULL DEFAULT '{"steps": []}',
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A user asks for a run (status queued); the agent runner creates the workflow's tasks and
-- records the outcome.
CREATE TABLE workflow_executions (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     text NOT NULL,
  workflow_id  uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);
