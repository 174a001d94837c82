-- Offline lead forms for many tenants (from the seed document "offline-lead-forms-task"): every
-- row carries its tenant, and each tenant's forms collect leads while the device is offline.

CREATE TABLE tenants (
  id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name  text NOT NULL
);

CREATE TABLE forms (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  title      text NOT NULL,
  fields     jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX forms_tenant_id ON forms(tenant_id);

CREATE TABLE leads (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  form_id     uuid REFERENCES forms(id) ON DELETE SET NULL,
  name        text NOT NULL CHECK (length(name) >= 2),
  email       text NOT NULL CHECK (email LIKE '%@%'),
  phone       text,
  message     text NOT NULL CHECK (length(message) >= 10),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_tenant_id ON leads(tenant_id);
