"""The bridge: poll loop, session hosts (transport ⇄ agent process), spawn modes."""
