-- The object a webhook event changes (0009), so that events of one object are applied in
-- arrival order by any number of instances, and so that the same body sent again after another
-- event of its object is told from a repeated delivery.

-- `chat:ID` (events of a chat, its messages and calls) or `account:ID` (account events); NULL
-- for events that change no such object.
ALTER TABLE timelines.webhook_events ADD COLUMN object_key text;

-- The claim skips an event while an earlier one of its object is pending (being applied by
-- another instance, or waiting for a retry).
CREATE INDEX webhook_events_object_pending_idx
    ON timelines.webhook_events (workspace, object_key, id)
    WHERE status = 'pending' AND object_key IS NOT NULL;
-- A body identical to an earlier event's (chat and account events have no id of their own) is
-- a repeated delivery only when no later event of its object came in between.
CREATE INDEX webhook_events_object_idx
    ON timelines.webhook_events (workspace, object_key, id)
    WHERE object_key IS NOT NULL;
