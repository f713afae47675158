"""IHE PCD-04 (Alert Communication Management) delivery of alert events to remote centres.

``oru_r40`` builds ORU^R40 messages from alert events (pure), ``delivery`` holds the
retry back-off and the delivery watchdog (pure, clock injected), ``sender`` runs the
Kafka consumer and the MLLP connection (``vigil acm send``).
"""
