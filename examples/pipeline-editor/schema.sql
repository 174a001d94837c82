-- Pipeline editor example schema (from the seed documents: teams, users, pipelines, steps,
-- connections between steps, comments and saved versions).

CREATE TABLE teams (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  avatar_url  text,
  color       text NOT NULL DEFAULT '#4f46e5',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
  team_id     uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role        text NOT NULL DEFAULT 'editor' CHECK (role IN ('owner', 'editor', 'viewer')),
  PRIMARY KEY (team_id, user_id)
);

CREATE TABLE pipelines (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id      uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
  name         text NOT NULL,
  description  text,
  yaml_version varchar(10) NOT NULL DEFAULT 'v2',
  config       jsonb NOT NULL DEFAULT '{}',
  created_by   uuid REFERENCES users(id),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipelines_team_id ON pipelines(team_id);

CREATE TABLE steps (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id    uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  name           text NOT NULL,
  type           text NOT NULL,
  config         jsonb NOT NULL DEFAULT '{}',
  position       integer NOT NULL,
  x              double precision NOT NULL DEFAULT 0,
  y              double precision NOT NULL DEFAULT 0,
  parent_step_id uuid REFERENCES steps(id) ON DELETE SET NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX steps_pipeline_id ON steps(pipeline_id);

CREATE TABLE connections (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id   uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  from_step_id  uuid NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
  to_step_id    uuid NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connections_pipeline_id ON connections(pipeline_id);

CREATE TABLE comments (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id  uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  step_id      uuid REFERENCES steps(id) ON DELETE CASCADE,
  user_id      uuid NOT NULL REFERENCES users(id),
  body         text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_pipeline_id ON comments(pipeline_id);

CREATE TABLE pipeline_versions (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id     uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  version_number  integer NOT NULL,
  snapshot        jsonb NOT NULL,
  created_by      uuid REFERENCES users(id),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (pipeline_id, version_number)
);
