-- Reads the Supabase shape of the current database back from the catalogs as one JSON
-- document (one row, one column), for tests/test_supabase_shape.py to compare with the
-- checked list tests/supabase/expected_shape.json (built from databases made of Supabase's
-- own SQL on PostgreSQL 15 and 17; docs/supabase.md).
-- Works unchanged on PostgreSQL 15, 16, 17 and 18: columns that exist only on 16+
-- (pg_auth_members.inherit_option / set_option) are read through to_jsonb(row).
-- Any role may run it; it only reads catalogs.
--
-- ACLs are normalised: NULL (= the default) is replaced by acldefault(), then exploded into
-- {grantee, privilege, grantable}; the grantor is left out on purpose (it follows from who ran
-- the GRANT and is not part of what a migration can or cannot do).
WITH
roles AS (
    SELECT r.rolname,
           jsonb_build_object(
             'superuser',   r.rolsuper,
             'inherit',     r.rolinherit,
             'createrole',  r.rolcreaterole,
             'createdb',    r.rolcreatedb,
             'login',       r.rolcanlogin,
             'replication', r.rolreplication,
             'bypassrls',   r.rolbypassrls,
             'settings', COALESCE((
                 SELECT jsonb_agg(cfg ORDER BY cfg)
                 FROM pg_db_role_setting s, unnest(s.setconfig) cfg
                 WHERE s.setrole = r.oid AND s.setdatabase = 0), '[]'::jsonb),
             'settings_in_this_db', COALESCE((
                 SELECT jsonb_agg(cfg ORDER BY cfg)
                 FROM pg_db_role_setting s, unnest(s.setconfig) cfg, pg_database d
                 WHERE s.setrole = r.oid AND s.setdatabase = d.oid AND d.datname = current_database()), '[]'::jsonb),
             'member_of', COALESCE((
                 SELECT jsonb_agg(jsonb_build_object(
                          'role', g.rolname,
                          'admin', (to_jsonb(m) ->> 'admin_option')::boolean,
                          -- NULL before PostgreSQL 16 (the attribute `inherit` of the member decides there)
                          'inherit', (to_jsonb(m) ->> 'inherit_option')::boolean,
                          'set', (to_jsonb(m) ->> 'set_option')::boolean)
                        ORDER BY g.rolname, (to_jsonb(m) ->> 'admin_option'))
                 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid), '[]'::jsonb)
           ) AS j
    FROM pg_roles r
    WHERE r.rolname !~ '^pg_'
),
db AS (
    SELECT jsonb_build_object(
             'name', d.datname,
             'owner', pg_get_userbyid(d.datdba),
             'acl', (SELECT jsonb_agg(jsonb_build_object(
                              'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                              'privilege', a.privilege_type, 'grantable', a.is_grantable)
                            ORDER BY 1)
                     FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a)) AS j
    FROM pg_database d WHERE d.datname = current_database()
),
schemas AS (
    SELECT n.nspname,
           jsonb_build_object(
             'owner', pg_get_userbyid(n.nspowner),
             'acl', (SELECT jsonb_agg(jsonb_build_object(
                              'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                              'privilege', a.privilege_type, 'grantable', a.is_grantable)
                            ORDER BY 1)
                     FROM aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a)) AS j
    FROM pg_namespace n
    WHERE n.nspname IN ('public', 'auth', 'extensions', 'storage', 'realtime', 'graphql', 'graphql_public', 'vault')
),
exts AS (
    SELECT e.extname, jsonb_build_object('schema', n.nspname, 'version', e.extversion,
                                         'owner', pg_get_userbyid(e.extowner)) AS j
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname <> 'plpgsql'
),
users_tbl AS (
    SELECT c.oid, c.relrowsecurity, c.relforcerowsecurity, c.relowner, c.relacl
    FROM pg_class c WHERE c.oid = to_regclass('auth.users')
),
auth_users AS (
    SELECT jsonb_build_object(
      'exists', true,
      'owner', pg_get_userbyid(t.relowner),
      'rls', t.relrowsecurity,
      'force_rls', t.relforcerowsecurity,
      'columns', (SELECT jsonb_agg(jsonb_build_object(
                         'name', a.attname,
                         'type', format_type(a.atttypid, a.atttypmod),
                         'not_null', a.attnotnull,
                         'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
                         'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END)
                       ORDER BY a.attnum)
                  FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                  WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped),
      'indexes', (SELECT jsonb_agg(jsonb_build_object('name', ic.relname, 'def', pg_get_indexdef(i.indexrelid))
                                   ORDER BY ic.relname)
                  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = t.oid),
      'constraints', (SELECT jsonb_agg(jsonb_build_object('name', co.conname, 'type', co.contype,
                                                          'def', pg_get_constraintdef(co.oid))
                                       ORDER BY co.conname)
                      FROM pg_constraint co WHERE co.conrelid = t.oid AND co.contype <> 'n'),
      'acl', (SELECT jsonb_agg(jsonb_build_object(
                       'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                       'privilege', a.privilege_type, 'grantable', a.is_grantable)
                     ORDER BY 1)
              FROM aclexplode(COALESCE(t.relacl, acldefault('r', t.relowner))) a),
      'policies', (SELECT COALESCE(jsonb_agg(p.polname ORDER BY p.polname), '[]'::jsonb)
                   FROM pg_policy p WHERE p.polrelid = t.oid)
    ) AS j
    FROM users_tbl t
),
auth_tables AS (
    SELECT COALESCE(jsonb_agg(jsonb_build_object('name', c.relname, 'owner', pg_get_userbyid(c.relowner),
                                                 'rls', c.relrowsecurity) ORDER BY c.relname), '[]'::jsonb) AS j
    FROM pg_class c WHERE c.relnamespace = to_regnamespace('auth') AND c.relkind IN ('r', 'p')
),
auth_funcs AS (
    SELECT p.proname,
           jsonb_build_object(
             'args', pg_get_function_identity_arguments(p.oid),
             'returns', format_type(p.prorettype, NULL),
             'language', l.lanname,
             'volatility', p.provolatile,
             'security_definer', p.prosecdef,
             'config', to_jsonb(p.proconfig),
             -- whitespace-normalised body, so reindenting is not a difference
             'body', btrim(regexp_replace(p.prosrc, '\s+', ' ', 'g')),
             'owner', pg_get_userbyid(p.proowner),
             'acl', (SELECT jsonb_agg(jsonb_build_object(
                              'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                              'privilege', a.privilege_type, 'grantable', a.is_grantable)
                            ORDER BY 1)
                     FROM aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a)) AS j
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
    WHERE p.pronamespace = to_regnamespace('auth') AND p.proname IN ('uid', 'role', 'email', 'jwt')
),
defacl AS (
    SELECT jsonb_agg(jsonb_build_object(
             'for_role', pg_get_userbyid(d.defaclrole),
             'schema', COALESCE(n.nspname, '*'),
             'objtype', d.defaclobjtype::text,
             'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
             'privilege', a.privilege_type,
             'grantable', a.is_grantable)
           ORDER BY 1) AS j
    FROM pg_default_acl d
    LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
    CROSS JOIN LATERAL aclexplode(d.defaclacl) a
)
SELECT jsonb_build_object(
    'server_major', current_setting('server_version_num')::int / 10000,
    'database', (SELECT j FROM db),
    'roles', (SELECT jsonb_object_agg(rolname, j) FROM roles),
    'schemas', (SELECT jsonb_object_agg(nspname, j) FROM schemas),
    'extensions', (SELECT COALESCE(jsonb_object_agg(extname, j), '{}'::jsonb) FROM exts),
    'auth_users', COALESCE((SELECT j FROM auth_users), '{"exists": false}'::jsonb),
    'auth_tables', (SELECT j FROM auth_tables),
    'auth_functions', (SELECT COALESCE(jsonb_object_agg(proname, j), '{}'::jsonb) FROM auth_funcs),
    'default_privileges', COALESCE((SELECT j FROM defacl), '[]'::jsonb)
);
