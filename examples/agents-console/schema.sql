-- AI-agent task console example schema (from the seed document "react-app-electric-integration"):
-- tasks and environments users edit, agent runs and their events the server owns, agent memory
-- with importance-based conflict resolution, and admin-controlled workflows.

CREATE TABLE environments (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id    text NOT NULL,
  name        text NOT NULL,
  config      jsonb NOT NULL DEFAULT '{}',
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id        text NOT NULL,
  environment_id  uuid REFERENCES environments(id) ON DELETE SET NULL,
  title           text NOT NULL,
  status          text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'running', 'done', 'failed')),
  priority        int NOT NULL DEFAULT 0,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_executions (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     text NOT NULL,
  task_id      uuid REFERENCES tasks(id) ON DELETE CASCADE,
  agent        text NOT NULL,
  status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  started_at   timestamptz,
  finished_at  timestamptz
);

CREATE TABLE observability_events (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id      text NOT NULL,
  execution_id  uuid NOT NULL REFERENCES agent_executions(id) ON DELETE CASCADE,
  level         text NOT NULL DEFAULT 'info',
  message       text NOT NULL,
  at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_memory (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id          text NOT NULL,
  agent             text NOT NULL,
  content           text NOT NULL,
  importance        int NOT NULL DEFAULT 0,
  last_accessed_at  timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workflows (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  definition  jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE workflow_executions (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     text NOT NULL,
  workflow_id  uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  status       text NOT NULL DEFAULT 'queued',
  started_at   timestamptz NOT NULL DEFAULT now()
);
