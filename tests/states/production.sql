-- The production state before 027 and 028: app.memberships already references
-- auth.users(id) ON DELETE CASCADE, carries two identical unique constraints on
-- user_id (the second from a later ALTER TABLE), and holds rows. Run as `postgres`
-- on a database shaped like Supabase with the program's baseline
-- (appdb/schema/fresh.py's program_baseline) applied.
INSERT INTO auth.users (id, aud, role, email)
SELECT ('00000000-0000-4000-9000-' || lpad(n::text, 12, '0'))::uuid, 'authenticated', 'authenticated',
       'member' || n || '@example.com'
FROM generate_series(1, 5) AS n
ON CONFLICT (id) DO NOTHING;

CREATE TABLE app.memberships (
    membership_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'active',
    plan_interval text CHECK (plan_interval IN ('month', 'year')),
    stripe_customer_id text,
    stripe_subscription_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_unique UNIQUE (user_id);

INSERT INTO app.memberships (user_id, status, plan_interval, stripe_customer_id, stripe_subscription_id)
SELECT ('00000000-0000-4000-9000-' || lpad(n::text, 12, '0'))::uuid, 'active',
       CASE WHEN n % 2 = 0 THEN 'year' ELSE 'month' END, 'cus_' || n, 'sub_' || n
FROM generate_series(1, 5) AS n;
