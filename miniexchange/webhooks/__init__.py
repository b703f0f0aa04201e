"""Webhook deliveries: payload rendering, the delivery pool, and the guarded transport.

The dispatcher actor (`miniexchange.actors.webhooks`) decides who gets what; this
package turns that into HTTPS POSTs on a few delivery threads, never on an actor's
time: one attempt per delivery, in event order per subscription (README, "Webhooks").
"""
