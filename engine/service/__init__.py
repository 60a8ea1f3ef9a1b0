"""The long-lived engine process: job queue, results store and HTTP API.

`engine.service.core.EngineService` holds the queue around one warm pipeline,
`engine.service.app.create_app` puts the HTTP API in front of it, and
`engine.service.cli` is `ace-companion engine`.
"""
