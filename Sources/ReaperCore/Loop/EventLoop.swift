/// Something that owns a descriptor registered with the loop.
public protocol EventHandler: AnyObject {
    /// Called on the loop thread with what epoll reported for `descriptor`.
    func handle(_ events: EpollEvents, on registration: Registration)
}

/// A handle to one registered descriptor. Its token packs the slot with a
/// generation number, so an event still queued for a descriptor that was closed
/// and reused in the same batch is dropped (swift-nio's SelectorEpoll).
public struct Registration: Hashable, Sendable {
    let slot: UInt32
    let generation: UInt32
    public let descriptor: Int32

    var token: UInt64 { UInt64(generation) << 32 | UInt64(slot) }
}

/// One thread, one epoll set, timers and nothing about TCP relaying.
/// Every handler runs on the thread that called `run()`.
public final class EventLoop {
    private struct Slot {
        var handler: (any EventHandler)?
        var generation: UInt32
        var descriptor: Int32
    }

    private let epoll: Epoll
    private var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var timers = TimerQueue()
    private var stopped = false

    /// The time the current batch of events started; handlers use it instead of
    /// reading the clock per operation.
    public private(set) var now: Instant

    public init() throws(SystemError) {
        epoll = try Epoll(capacity: 1024)
        now = Instant.now()
    }

    public var registeredCount: Int { slots.count - freeSlots.count }

    public func register(_ descriptor: Int32, interest: EpollEvents, handler: any EventHandler) throws(SystemError)
        -> Registration
    {
        let slot: UInt32
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            slot = UInt32(slots.count)
            slots.append(Slot(handler: nil, generation: 0, descriptor: -1))
        }
        let registration = Registration(slot: slot, generation: slots[Int(slot)].generation, descriptor: descriptor)
        do {
            try epoll.add(descriptor, interest, token: registration.token)
        } catch {
            freeSlots.append(slot)
            throw error
        }
        slots[Int(slot)].handler = handler
        slots[Int(slot)].descriptor = descriptor
        return registration
    }

    /// Changes what the descriptor is watched for. Only a connection's
    /// `updateInterest()` calls this for relay sockets.
    public func modify(_ registration: Registration, interest: EpollEvents) {
        guard isCurrent(registration) else { return }
        do {
            try epoll.modify(registration.descriptor, interest, token: registration.token)
        } catch {
            // The descriptor is registered and open (we own both), so the kernel can
            // only refuse for memory: leave the old interest; the next change retries.
        }
    }

    /// Stops watching; call before closing the descriptor.
    public func deregister(_ registration: Registration) {
        guard isCurrent(registration) else { return }
        epoll.remove(registration.descriptor)
        let index = Int(registration.slot)
        slots[index].handler = nil
        slots[index].generation &+= 1
        freeSlots.append(registration.slot)
    }

    /// Frees the slot without EPOLL_CTL_DEL, for a descriptor about to be closed
    /// that no other descriptor shares: close(2) itself takes it out of the epoll
    /// set, and the slot's new generation drops any event already queued for it.
    public func forget(_ registration: Registration) {
        guard isCurrent(registration) else { return }
        let index = Int(registration.slot)
        slots[index].handler = nil
        slots[index].generation &+= 1
        freeSlots.append(registration.slot)
    }

    private func isCurrent(_ registration: Registration) -> Bool {
        let index = Int(registration.slot)
        return index < slots.count && slots[index].generation == registration.generation
            && slots[index].handler != nil
    }

    /// Runs `action` once at `deadline` unless the returned timer is cancelled.
    @discardableResult
    public func schedule(at deadline: Instant, _ action: @escaping () -> Void) -> LoopTimer {
        let timer = LoopTimer(deadline: deadline, action: action)
        timers.insert(timer)
        return timer
    }

    @discardableResult
    public func schedule(after delay: Duration, _ action: @escaping () -> Void) -> LoopTimer {
        schedule(at: Instant.now().adding(delay), action)
    }

    /// Drops every handler and timer, once `run()` has returned for good: their
    /// closures may hold the loop or its handlers, and this breaks those cycles
    /// (descriptors stay with their owners).
    public func discardPending() {
        for index in slots.indices { slots[index].handler = nil }
        timers = TimerQueue()
    }

    /// Makes `run()` return after the current batch.
    public func stop() { stopped = true }

    /// Dispatches events and timers until `stop()`.
    public func run() throws(SystemError) {
        stopped = false
        while !stopped {
            now = Instant.now()
            fireDueTimers()
            if stopped { break }
            let timeout = timers.millisecondsUntilNext(from: now)
            try epoll.wait(timeoutMilliseconds: timeout) { token, events in
                let slot = UInt32(truncatingIfNeeded: token)
                let generation = UInt32(truncatingIfNeeded: token >> 32)
                let index = Int(slot)
                guard index < slots.count, slots[index].generation == generation,
                    let handler = slots[index].handler
                else { return }
                now = Instant.now()
                handler.handle(
                    events,
                    on: Registration(slot: slot, generation: generation, descriptor: slots[index].descriptor))
            }
        }
    }

    private func fireDueTimers() {
        while let timer = timers.popDue(now: now) {
            timer.action()
            now = Instant.now()
        }
    }
}
