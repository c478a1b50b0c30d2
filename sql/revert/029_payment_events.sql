-- Revert of 029: drop app.payment_events.
--
-- This loses every row of app.payment_events (on production that includes the rows the
-- backend's older migrations wrote before 029 adopted the table), so it is refused
-- while the table has rows unless data loss was allowed on purpose
-- (`appdb revert 029 --allow-data-loss`, which sets appdb.allow_data_loss; on dev and
-- local the Pulumi stacks pass it, never on prod).

-- appdb:step drop_table
DO $guard$
DECLARE
    rows_held bigint;
BEGIN
    IF to_regclass('app.payment_events') IS NULL
       OR current_setting('appdb.allow_data_loss', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT count(*) INTO rows_held FROM app.payment_events;
    IF rows_held > 0 THEN
        RAISE EXCEPTION 'reverting 029 drops app.payment_events and its % row(s); nothing was changed', rows_held
            USING ERRCODE = 'AP001',
                  HINT = 'keep the rows: restore migration 029 in the code; or drop them on purpose: take a '
                         'backup or point-in-time-recovery snapshot, run appdb revert 029 --allow-data-loss, '
                         'then pulumi up (docs/rollback.md)';
    END IF;
END
$guard$;

-- squawk-ignore ban-drop-table
DROP TABLE IF EXISTS app.payment_events;
