/// What a stored connection's name cannot carry: its listener, its accept time
/// and its client's ports.
///
/// systemd hands stored descriptors back with their names in one environment
/// variable, LISTEN_FDNAMES, and Linux limits one variable to 128 KiB
/// (MAX_ARG_STRLEN). Names that said all this (about 32 bytes, twice per
/// pair) fit about 2 000 connections; past that the next start failed to
/// exec (E2BIG), the unit looped, and every connection was lost. So a name is
/// only the id (`@` and base 36), and the rest lives here: a memfd kept in the
/// store beside the connections, one fixed-size record per connection, written
/// before its sockets are sent (a crash in between leaves a record without
/// sockets, which the next start clears).
///
/// Layout: a 16-byte header (magic, slot count, record size), then `slots`
/// records of 96 bytes: id + 1 (0 marks a free slot), accept time in
/// CLOCK_MONOTONIC milliseconds, the client's local and peer ports, and the
/// listener's name (at most 64 bytes).
final class StoreLedger {
    struct Record: Equatable {
        var id: UInt64
        var listener: String
        var acceptedAtMilliseconds: UInt64
        var client: StoredName.ClientPorts
    }

    static let magic = Array("reaperd\u{1}".utf8)
    static let headerSize = 16
    static let recordSize = 96

    let descriptor: FileDescriptor
    private(set) var slots: Int
    private var free: [Int] = []
    /// Records found in a ledger that came back from the store, by id.
    private(set) var found: [UInt64: (slot: Int, record: Record)] = [:]

    /// A new, empty ledger of `slots` records.
    init(slots: Int) throws(SystemError) {
        descriptor = try MemoryFile.create(name: "reaperd-store-ledger")
        self.slots = 0
        try grow(to: slots)
    }

    /// The ledger the store gave back; nil when it is not one (its records
    /// are then unknown, and the connections they describe cannot be told).
    init?(received fd: consuming FileDescriptor, slots wanted: Int) {
        guard let header = try? MemoryFile.read(fd.raw, count: Self.headerSize, at: 0),
            header.count == Self.headerSize, Array(header[0..<8]) == Self.magic,
            Self.integer(header, at: 12, bytes: 4) == UInt64(Self.recordSize)
        else {
            fd.close()
            return nil
        }
        let count = Int(Self.integer(header, at: 8, bytes: 4))
        guard let size = try? MemoryFile.size(fd.raw), size >= Self.headerSize + count * Self.recordSize,
            let bytes = try? MemoryFile.read(fd.raw, count: count * Self.recordSize, at: Self.headerSize)
        else {
            fd.close()
            return nil
        }
        descriptor = fd
        slots = count
        for slot in 0..<count {
            let base = slot * Self.recordSize
            if let record = Self.decode(bytes[base..<base + Self.recordSize]) {
                found[record.id] = (slot, record)
            } else {
                free.append(slot)
            }
        }
        free.reverse()
        if wanted > count { try? grow(to: wanted) }
    }

    /// Writes `record` into a free slot; nil when there is none or it fails.
    func write(_ record: Record) -> Int? {
        guard let slot = free.popLast() else { return nil }
        do {
            try MemoryFile.write(descriptor.raw, Self.encode(record), at: offset(slot))
            return slot
        } catch {
            free.append(slot)
            return nil
        }
    }

    /// The slot's connection left the store.
    func clear(_ slot: Int) {
        try? MemoryFile.write(descriptor.raw, [UInt8](repeating: 0, count: 8), at: offset(slot))
        free.append(slot)
    }

    /// Takes a found record for a connection that came back, so it is not cleared.
    func claim(_ id: UInt64) -> (slot: Int, record: Record)? { found.removeValue(forKey: id) }

    /// Clears the found records no connection claimed (their sockets never
    /// reached the store, or were dropped).
    func clearUnclaimed() {
        for (_, entry) in found { clear(entry.slot) }
        found.removeAll()
    }

    private func grow(to wanted: Int) throws(SystemError) {
        try MemoryFile.resize(descriptor.raw, to: Self.headerSize + wanted * Self.recordSize)
        var header = Self.magic
        header += Self.bytes(UInt64(wanted), count: 4) + Self.bytes(UInt64(Self.recordSize), count: 4)
        try MemoryFile.write(descriptor.raw, header, at: 0)
        free = Array((slots..<wanted).reversed()) + free
        slots = wanted
    }

    private func offset(_ slot: Int) -> Int { Self.headerSize + slot * Self.recordSize }

    static func encode(_ record: Record) -> [UInt8] {
        var bytes = Self.bytes(record.id + 1, count: 8) + Self.bytes(record.acceptedAtMilliseconds, count: 8)
        bytes += Self.bytes(UInt64(record.client.local), count: 2) + Self.bytes(UInt64(record.client.peer), count: 2)
        let name = Array(record.listener.utf8.prefix(64))
        bytes.append(UInt8(name.count))
        bytes += name
        bytes += [UInt8](repeating: 0, count: recordSize - bytes.count)
        return bytes
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> Record? {
        let raw = Array(bytes)
        guard raw.count == recordSize else { return nil }
        let idPlusOne = integer(raw, at: 0, bytes: 8)
        let length = Int(raw[20])
        guard idPlusOne > 1, idPlusOne < .max, length > 0, length <= 64,
            let listener = String(validating: raw[21..<21 + length], as: UTF8.self)
        else { return nil }
        return Record(
            id: idPlusOne - 1, listener: listener, acceptedAtMilliseconds: integer(raw, at: 8, bytes: 8),
            client: .init(local: UInt16(integer(raw, at: 16, bytes: 2)), peer: UInt16(integer(raw, at: 18, bytes: 2))))
    }

    private static func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }

    private static func integer(_ bytes: [UInt8], at offset: Int, bytes count: Int) -> UInt64 {
        (0..<count).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }
}
