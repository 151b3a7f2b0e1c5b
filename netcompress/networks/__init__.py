"""Plain torch.nn modules. Every classifier follows one interface:

    logits = net(x)
    logits, features = net(x, return_features=True)   # features: (N, net.feature_dim)
"""
