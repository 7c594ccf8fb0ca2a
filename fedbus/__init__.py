"""fedbus: the shared library, fleet tools and examples, under one installed name.

The user-facing services stay top level (``coordinator``, ``edge_agent``,
``client_selectors``); everything else lives here so that no generic name
(``fleet``, ``examples``) is installed into site-packages.
"""
