-- Stored webhook messages are deleted with their last delivery from now on, not found by a
-- sweep (docs/webhooks.md, "Operating").
--
-- Until now the webhook worker looked, every 10 s, for stored messages older than the retention
-- that no delivery referred to: a hash anti-join over webhook_events and webhook_deliveries,
-- whose cost grew with the retention period. The worker now deletes the messages of the
-- deliveries it prunes, and DeleteEndpoint deletes the messages only its endpoint's deliveries
-- referred to. A message left unreferenced by an endpoint deleted before this release would be
-- found by neither, so they are deleted here, once. A message is stored only together with a
-- delivery (the intake writes both in one statement), so an unreferenced one can never be sent.
delete from webhook_events ev
 where not exists (select 1 from webhook_deliveries d where d.tenant_id = ev.tenant_id and d.event_id = ev.event_id);
