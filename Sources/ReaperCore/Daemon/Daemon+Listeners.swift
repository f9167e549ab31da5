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
                message: "socket passed by systemd with FileDescriptorName=\(socket.name) has no [listener:\(socket.name)]",
                errno: Errno.invalid.code, isConfiguration: true)
        }
        var wanted: [(key: String, listener: ListenerSettings, endpoint: Endpoint?, activated: ActivatedSocket?)] = []
        for settings in configuration.listeners {
            let passed = activated.filter { $0.name == settings.name }
            if settings.listen.isEmpty && passed.isEmpty {
                throw ListenerSetupError(
                    message: "\(configSourceDescription):\(settings.line): listener \(settings.name) has no listen = and no socket passed by systemd",
                    errno: Errno.invalid.code, isConfiguration: true)
            }
            for socket in passed { wanted.append(("fd:\(socket.descriptor)", settings, nil, socket)) }
            for endpoint in settings.listen { wanted.append((endpoint.description, settings, endpoint, nil)) }
        }

        var kept: [String: ListeningEndpoint] = [:]
        for endpoint in endpoints { kept[endpoint.key] = endpoint }
        var opened: [(ListenerSettings, ListeningEndpoint)] = []
        do {
            for item in wanted where kept[item.key] == nil {
                let state = listeners[item.listener.name] ?? ListenerState(settings: item.listener)
                if let socket = item.activated {
                    let address = (try? Sockets.localAddress(socket.descriptor)).map { "\($0)" } ?? "fd \(socket.descriptor)"
                    let endpoint = ListeningEndpoint(
                        key: item.key, address: address, socket: FileDescriptor(owning: socket.descriptor),
                        listener: state, activated: true, daemon: self)
                    opened.append((item.listener, endpoint))
                } else if let configured = item.endpoint, let stored = adoptStoredListener(item.listener.name, endpoint: configured) {
                    let endpoint = ListeningEndpoint(
                        key: item.key, address: configured.description, socket: FileDescriptor(owning: stored.descriptor),
                        listener: state, activated: false, daemon: self)
                    endpoint.isStored = true
                    opened.append((item.listener, endpoint))
                } else if let configured = item.endpoint {
                    let socket = try ListeningSocket.open(
                        listener: item.listener.name, endpoint: configured, backlog: item.listener.connection.backlog,
                        reusePort: item.listener.connection.reusePort)
                    let bound = (try? Sockets.localAddress(socket.raw)).map { "\($0)" } ?? configured.description
                    let endpoint = ListeningEndpoint(
                        key: item.key, address: bound, socket: socket, listener: state, activated: false, daemon: self)
                    opened.append((item.listener, endpoint))
                }
            }
        } catch {
            // `opened` goes out of scope here and closes what it bound.
            throw ListenerSetupError(message: error.description, errno: error.failure.errno.code)
        }

        // Every bind succeeded: commit.
        let wantedKeys = Set(wanted.map(\.key))
        for endpoint in endpoints where !wantedKeys.contains(endpoint.key) {
            precondition(!endpoint.activated, "activated sockets are checked above")
            if let registration = endpoint.registration { loop.deregister(registration) }
            endpoint.registration = nil
            unstoreListener(endpoint)
            logger.info("listener closed", [("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ADDRESS", endpoint.address)])
        }
        endpoints.removeAll { !wantedKeys.contains($0.key) }

        for name in listenerOrder where !names.contains(name) { listeners[name]?.configured = false }
        for settings in configuration.listeners {
            if let state = listeners[settings.name] {
                let changed = state.settings.connection != settings.connection
                state.settings = settings
                state.configured = true
                if changed {
                    for connection in table.all where connection.listener === state {
                        connection.applySettings(settings.connection)
                    }
                }
            } else {
                listeners[settings.name] = ListenerState(settings: settings)
                listenerOrder.append(settings.name)
            }
        }
        for endpoint in endpoints {
            if let state = listeners[endpoint.listener.name], let item = wanted.first(where: { $0.key == endpoint.key }) {
                endpoint.listener = listeners[item.listener.name] ?? state
            }
        }
        for (_, endpoint) in opened {
            if let state = listeners[endpoint.listener.name] { endpoint.listener = state }
            do {
                endpoint.registration = try loop.register(
                    endpoint.socket.raw, interest: acceptPaused ? [] : [.readable], handler: endpoint)
            } catch {
                logger.error("cannot watch listener", [("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ERROR", "\(error)")])
            }
            endpoints.append(endpoint)
            if !endpoint.isStored {
                storeListener(endpoint)
                endpoint.isStored = store != nil
            }
            logger.info("listening", [("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ADDRESS", endpoint.address)])
        }
    }
}
