-- A few Supabase Auth users for trying RLS by hand on the local database
-- (`appdb local reset --seed`). Fixed ids, so examples in the README keep working.
-- GoTrue sets created_at/updated_at itself (the columns have no default) and '' in the tokens.
INSERT INTO auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
VALUES
    ('00000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'ada@example.com', '{}', '{}', now(), now()),
    ('00000000-0000-4000-8000-000000000002', 'authenticated', 'authenticated', 'grace@example.com', '{}', '{}', now(), now()),
    ('00000000-0000-4000-8000-000000000003', 'authenticated', 'authenticated', 'linus@example.com', '{}', '{}', now(), now())
ON CONFLICT (id) DO NOTHING;
