"""`canon-edit view RUN`: a browser viewer for a run's canonical asset and its edits (viser).

Application layer: it imports only the core. Pure pieces (probe, policy, canvas, overlays, facts,
camera) carry the logic and are tested without a browser; `app` wires them to viser, and
`render_worker` keeps each client's rendering off the server's threads.
"""
