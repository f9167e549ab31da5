/// Why listeners could not be put in place; nothing was changed.
struct ListenerSetupError: Error {
    let message: String
    let errno: Int32
    /// The file asks for something impossible, as opposed to a bind failing.
    var isConfiguration = false
}

extension Daemon {
    /// Makes the open listening sockets match `configuration`: binds what is new
    /// first, and only when every bind succeeded closes what is gone and switches
    /// settings. A failure changes nothing, so a bad reload keeps serving.
    func applyListeners(_ configuration: Configuration) throws(ListenerSetupError) {
        let names = Set(configuration.listeners.map(\.name))
        for socket in activated where !names.contains(socket.name) {
            throw ListenerSetupError(
                message:
                    "socket passed by systemd with FileDescriptorName=\(socket.name) has no [listener:\(socket.name)]",
                errno: Errno.invalid.code, isConfiguration: true)
        }
        var wanted: [(key: String, listener: ListenerSettings, endpoint: Endpoint?, activated: ActivatedSocket?)] = []
        for settings in configuration.listeners {
            let passed = activated.filter { $0.name == settings.name }
            if settings.listen.isEmpty && passed.isEmpty {
                throw ListenerSetupError(
                    message:
                        "\(configSourceDescription):\(settings.line): listener \(settings.name) has no listen = and no socket passed by systemd",
                    errno: Errno.invalid.code, isConfiguration: true)
            }
            for socket in passed { wanted.append(("fd:\(socket.descriptor)", settings, nil, socket)) }
            for endpoint in settings.listen { wanted.append((endpoint.description, settings, endpoint, nil)) }
        }

        // Pair each wanted socket with an open one: first the same address on the
        // same listener, then the same address moved to another listener. Two
        // listeners may both say `127.0.0.1:0`; each keeps its own socket.
        var available = endpoints
        var matched: [ListeningEndpoint?] = wanted.map { item in
            guard
                let index = available.firstIndex(where: { $0.key == item.key && $0.listener.name == item.listener.name }
                )
            else { return nil }
            return available.remove(at: index)
        }
        for (index, item) in wanted.enumerated() where matched[index] == nil {
            if let found = available.firstIndex(where: { $0.key == item.key }) {
                matched[index] = available.remove(at: found)
            }
        }

        var opened: [(index: Int, endpoint: ListeningEndpoint)] = []
        do {
            for (index, item) in wanted.enumerated() where matched[index] == nil {
                let placeholder = listeners[item.listener.name] ?? ListenerState(settings: item.listener)
                if let socket = item.activated {
                    let address =
                        (try? Sockets.localAddress(socket.descriptor)).map { "\($0)" } ?? "fd \(socket.descriptor)"
                    opened.append(
                        (
                            index,
                            ListeningEndpoint(
                                key: item.key, address: address, socket: FileDescriptor(owning: socket.descriptor),
                                listener: placeholder, activated: true, daemon: self)
                        ))
                } else if let configured = item.endpoint,
                    let stored = store.takeListener(item.listener.name, address: configured)
                {
                    // What the socket is bound to, as for a fresh bind: `:0` got a port.
                    let bound = (try? Sockets.localAddress(stored.descriptor)).map { "\($0)" } ?? configured.description
                    let endpoint = ListeningEndpoint(
                        key: item.key, address: bound,
                        socket: FileDescriptor(owning: stored.descriptor),
                        listener: placeholder, activated: false, daemon: self)
                    store.adopted(endpoint, from: stored)
                    opened.append((index, endpoint))
                } else if let configured = item.endpoint {
                    let socket = try ListeningSocket.open(
                        listener: item.listener.name, endpoint: configured, backlog: item.listener.connection.backlog,
                        reusePort: item.listener.connection.reusePort, settings: item.listener.connection)
                    let bound = (try? Sockets.localAddress(socket.raw)).map { "\($0)" } ?? configured.description
                    opened.append(
                        (
                            index,
                            ListeningEndpoint(
                                key: item.key, address: bound, socket: socket, listener: placeholder, activated: false,
                                daemon: self)
                        ))
                }
            }
        } catch {
            // `opened` goes out of scope here and closes what it bound.
            throw ListenerSetupError(message: error.description, errno: error.failure.errno.code)
        }

        // Every bind succeeded: commit.
        for endpoint in available {
            precondition(!endpoint.activated, "activated sockets are checked above")
            endpoint.pause?.cancel()
            endpoint.pause = nil
            if let registration = endpoint.registration { loop.deregister(registration) }
            endpoint.registration = nil
            store.unstore(endpoint)
            logger.info(
                "listener closed",
                [("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ADDRESS", endpoint.address)])
        }

        for name in listenerOrder where !names.contains(name) { listeners[name]?.configured = false }
        for settings in configuration.listeners {
            if let state = listeners[settings.name] {
                applyListenerSettings(settings, to: state)
                state.configured = true
            } else {
                listeners[settings.name] = ListenerState(settings: settings)
                listenerOrder.append(settings.name)
            }
        }
        for state in orderedListeners { followUpstream(state) }

        var next: [ListeningEndpoint] = []
        for (index, item) in wanted.enumerated() {
            guard let state = listeners[item.listener.name] else { continue }
            if let endpoint = matched[index] {
                endpoint.listener = state
                store.followRename(endpoint)
                // listen(2) again takes a new backlog on a listening socket.
                if !endpoint.activated { try? Sockets.listen(endpoint.socket.raw, backlog: state.connection.backlog) }
                try? ListeningSocket.configure(endpoint.socket.raw, state.connection)
                next.append(endpoint)
            }
        }
        for (index, endpoint) in opened {
            guard let state = listeners[wanted[index].listener.name] else { continue }
            endpoint.listener = state
            // Sockets from systemd (activated or stored) get the options too.
            try? ListeningSocket.configure(endpoint.socket.raw, state.connection)
            // Watched now unless accepting is paused for every endpoint (then the
            // end of that pause watches it with the others).
            updateWatch(endpoint)
            next.append(endpoint)
            store.store(endpoint)
            logger.info("listening", [("REAPERD_LISTENER", state.name), ("REAPERD_ADDRESS", endpoint.address)])
        }
        endpoints = next
    }

    /// New settings for a listener; its open connections take the new
    /// keepalive and timeouts (and the sweep looks at them again).
    func applyListenerSettings(_ settings: ListenerSettings, to state: ListenerState) {
        let changed = state.settings.connection != settings.connection
        state.settings = settings
        guard changed else { return }
        for connection in table.all where connection.listener === state {
            connection.applySettings(settings.connection)
            sweepSoon(connection)
        }
    }
}
