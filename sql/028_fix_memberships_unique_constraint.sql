-- 028: leave exactly one unique constraint on app.memberships(user_id).
--
-- Production carries two identical ones: memberships_user_id_key (from CREATE TABLE)
-- and memberships_user_unique (from a later ALTER TABLE; PostgreSQL would have merged
-- them inside one CREATE TABLE). Drop memberships_user_unique only while another unique
-- constraint on exactly (user_id) remains: where it is the only one, it stays. Never zero.
-- A redundant unique index (not a constraint) is reported by `appdb verify`/`inspect`.

-- appdb:step drop_duplicate
DO $dedupe$
DECLARE
    user_col smallint;
BEGIN
    SELECT attnum INTO user_col FROM pg_attribute
    WHERE attrelid = 'app.memberships'::regclass AND attname = 'user_id' AND NOT attisdropped;

    IF EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'app.memberships'::regclass AND contype = 'u'
          AND conname = 'memberships_user_unique' AND conkey = ARRAY[user_col]
    ) AND EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'app.memberships'::regclass AND contype = 'u'
          AND conname <> 'memberships_user_unique' AND conkey = ARRAY[user_col]
    ) THEN
        RAISE NOTICE 'dropping memberships_user_unique: another unique constraint on (user_id) remains';
        ALTER TABLE app.memberships DROP CONSTRAINT memberships_user_unique;
    END IF;
END
$dedupe$;
