"""Discovery of the inference servers on this node through the Kubernetes API.

`pods` decides from a Pod object alone whether it is a server and where its metrics are (its
annotations), `owners` names its workload (owner references, ReplicaSet -> Deployment), `watcher`
keeps the node's pods in view (list, then watch with resource versions, relist on 410 Gone) as a
supervised poller, and `roster` keeps the discovered servers and the ones gone within their grace
period, for the daemon to start and stop pollers as reload does.
"""
