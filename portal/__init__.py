"""The partner portal: each application's partners see and manage their own webhooks in a browser
(README "Partner portal"). Access is a one-time link an operator makes (`services.access_create`),
exchanged for a session scoped to that application; every page reads through `scope.Portal`,
which finds only that application's objects."""
