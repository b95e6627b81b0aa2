"""
The order service: three replicas of a durable, replicated order log.  One
leads (the front-end chooses it); the others follow its log stream.
"""
